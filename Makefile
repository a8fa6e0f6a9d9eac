# Percorso — the two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint format openapi bench lock clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Percorso needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: set up, then run API + pipeline on embedded Postgres and Kafka (Ctrl-C stops all)
run: install
	$(BIN)/percorso dev

## test: lint, type-check, then the whole suite against real Postgres and a real broker
test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## openapi: regenerate openapi/openapi.json
openapi: install
	$(BIN)/percorso openapi

## bench: the benchmark (QUICK=1 for a short run)
bench: install
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

## lock: pin every package (the newest pyproject.toml admits) in constraints.txt
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet '.[dev]'
	{ echo '# Every package make install, the Docker image and CI install, at the versions the'; \
	  echo '# suite last passed with. Regenerate with `make lock` (then make test), never by hand.'; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^percorso'; } > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .lock-venv .percorso .pytest_cache .mypy_cache .ruff_cache
