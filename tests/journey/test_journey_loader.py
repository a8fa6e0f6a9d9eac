"""Loading model files: mistakes are reported with file, line and problem."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest

from app.journey import EventFacts, JourneyModelError, load_model

GOOD = """\
name = "shop"
stages = ["awareness", "interest", "purchase"]
first_touch = "awareness"

[[rules]]
id = "signup"
stage = "interest"
event = "Signed Up"

[[rules]]
id = "order"
stage = "purchase"
event = ["Order Completed"]
type = "track"
channel = ["web", "in_store"]
count = { gte = 1 }
[[rules.where]]
property = "revenue"
op = "gt"
value = 0
[[rules.where]]
property = "currency"
op = "in"
value = ["EUR", "USD"]
"""


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the `occurrence`-th line containing `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence - 1]


def load_error(tmp_path: Path, text: str, name: str = "journey.toml") -> JourneyModelError:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(JourneyModelError) as info:
        load_model(str(path))
    assert info.value.file == str(path)
    return info.value


def test_good_model_loads(tmp_path: Path) -> None:
    path = tmp_path / "journey.toml"
    path.write_text(GOOD, encoding="utf-8")
    model = load_model(str(path))
    assert (model.name, model.source) == ("shop", str(path))
    assert [rule.id for rule in model.rules] == ["signup", "order"]
    assert model.rules[1].line == line_of(GOOD, "[[rules]]", 2)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = GOOD.replace('event = "Signed Up"', "event = Signed Up")
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, "event = Signed Up")
    assert error.problem.startswith("invalid TOML")
    assert str(error) == f"{error.file}, line {error.line}: {error.problem}"


@pytest.mark.parametrize(
    ("old", "new", "needle", "occurrence", "problem"),
    [
        ('stage = "purchase"', 'stage = "purchse"', "purchse", 1,
         "rule 'order': unknown stage 'purchse' (stages: awareness, interest, purchase)"),
        ('event = "Signed Up"', 'evnt = "Signed Up"', "evnt", 1,
         "rule 'signup': unknown key 'evnt' (did you mean 'event'?)"),
        ('op = "gt"', 'op = "greater"', "greater", 1,
         "rule 'order': where #1: unknown op 'greater'"),
        ('op = "in"', 'op = "betwen"', "betwen", 1, "rule 'order': where #2: unknown op"),
        ("value = 0", 'value = "zero"', "zero", 1,
         "rule 'order': where #1: op 'gt' needs a number, got 'zero'"),
        ('value = ["EUR", "USD"]', 'value = "EUR"', 'value = "EUR"', 1,
         "rule 'order': where #2: op 'in' needs a non-empty list"),
        ('property = "currency"', 'proprety = "currency"', "proprety", 1,
         "where #2: unknown key 'proprety' (did you mean 'property'?)"),
        ('channel = ["web", "in_store"]', 'channel = ["web", "store"]', "store", 1,
         "rule 'order': unknown channel 'store' (channels: ads, call_center, crm"),
        ('type = "track"', 'type = "event"', 'type = "event"', 1,
         "rule 'order': unknown type 'event' (types: alias, group, identify"),
        ('id = "order"', 'id = "signup"', 'id = "signup"', 2,
         "rule 'signup': duplicate rule id (also rule 1, line 5)"),
        ("count = { gte = 1 }", "count = { atleast = 2 }", "atleast", 1,
         "rule 'order': count: unknown condition 'atleast'"),
        ("count = { gte = 1 }", "count = { gte = -1 }", "gte = -1", 1,
         "rule 'order': count.gte must be a whole number >= 0, got -1"),
        ("count = { gte = 1 }", "count = { gte = 3, lt = 3 }", "lt = 3", 1,
         "rule 'order': count {'gte': 3, 'lt': 3} can never hold"),
        ('first_touch = "awareness"', 'first_touch = "awarenes"', "first_touch =", 1,
         "first_touch: unknown stage 'awarenes'"),
        ('stages = ["awareness", "interest", "purchase"]',
         'stages = ["awareness", "interest", "Interest", "purchase"]', "stages", 1,
         "duplicate stage 'Interest'"),
        ('stages = ["awareness", "interest", "purchase"]', "stages = []", "stages", 1,
         "'stages' must be a non-empty list"),
        ('name = "shop"', 'name = "shop"\nstage = ["x"]', 'stage = ["x"]', 1,
         "unknown key 'stage' (did you mean 'stages'?)"),
    ],
)  # fmt: skip
def test_semantic_errors_name_line_and_problem(
    tmp_path: Path, old: str, new: str, needle: str, occurrence: int, problem: str
) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    error = load_error(tmp_path, text)
    assert problem in error.problem
    assert error.line == line_of(text, needle, occurrence)
    assert f"journey.toml, line {error.line}: " in str(error)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ('name = "shop"', 'name = "sh\\u0000op"', "'name'"),
        ('name = "shop"', 'name = "shop"\ndescription = "\\u0000"', "'description'"),
        ('"interest", "purchase"]', '"inte\\u0000rest", "purchase"]', "stage 'inte\\x00rest'"),
        ('first_touch = "awareness"', 'first_touch = "awareness\\u0000"', "first_touch"),
        ('id = "signup"', 'id = "sign\\u0000up"', "rule 1: 'id'"),
        ('id = "signup"', 'id = "signup"\ndescription = "\\u0000"', "rule 'signup': 'description'"),
        ('event = "Signed Up"', 'event = ["Signed Up", "\\u0000*"]', "rule 'signup': 'event'"),
        ('property = "revenue"', 'property = "reve\\u0000nue"', "where #1: 'property'"),
        ('op = "gt"\nvalue = 0', 'op = "eq"\nvalue = "\\u0000"', "rule 'order': where #1: 'value'"),
        ('value = ["EUR", "USD"]', 'value = ["EUR", "US\\u0000D"]', "where #2: 'value'"),
    ],
)  # fmt: skip
def test_a_nul_character_postgresql_cannot_store_is_refused_with_its_line(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    """A stage or rule id with a NUL would load, then every event it is written for would
    be dead-lettered ("unsupported Unicode escape sequence")."""
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    error = load_error(tmp_path, text)
    assert f"{problem} contains a NUL character" in error.problem
    assert error.line == line_of(text, "\\u0000")


HUGE = "1" + "0" * 400  # an integer no float can hold


@pytest.mark.parametrize(
    ("old", "new", "got"),
    [
        ("value = 0", f"value = {HUGE}", "100000000000000000...000000000000000000"),
        ("value = 0", "value = inf", "inf"),
        ("value = 0", "value = -inf", "-inf"),
        ("value = 0", "value = 1e400", "inf"),
        ('value = ["EUR", "USD"]', f'value = ["EUR", {HUGE}]', "100000000000000000..."),
        ('value = ["EUR", "USD"]', 'value = ["EUR", nan]', "nan"),
        ('op = "gt"\nvalue = 0', 'op = "ne"\nvalue = -nan', "nan"),
    ],
)
def test_a_number_that_is_not_finite_is_refused_with_its_line(
    tmp_path: Path, old: str, new: str, got: str
) -> None:
    """No stored property compares with it, and the model's JSON cannot show it."""
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    error = load_error(tmp_path, text)
    assert "'value' must be a finite number within ±1.8e308, got " + got in error.problem
    assert error.line == line_of(text, new.splitlines()[-1])


@pytest.mark.parametrize("name", ["deep.toml", "deep.yaml"])
def test_nesting_deeper_than_the_parser_follows_is_a_clean_error(tmp_path: Path, name: str) -> None:
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    separator = " = " if name.endswith(".toml") else ": "
    error = load_error(tmp_path, "stages" + separator + "[" * 5000 + "]" * 5000 + "\n", name)
    assert "nesting too deep" in error.problem
    assert str(error).startswith(f"{error.file}: invalid ")


def test_a_value_toml_cannot_build_is_a_clean_error(tmp_path: Path) -> None:
    text = GOOD.replace("count = { gte = 1 }", "count = { gte = 1" + "0" * 5000 + " }")
    error = load_error(tmp_path, text)
    assert error.problem.startswith("invalid TOML: Exceeds the limit (4300 digits)")


def test_rule_without_stage_points_at_its_header(tmp_path: Path) -> None:
    text = GOOD.replace('stage = "interest"\n', "")
    error = load_error(tmp_path, text)
    assert error.problem == "rule 'signup': 'stage' is missing"
    assert error.line == line_of(text, "[[rules]]", 1)


def test_exists_with_a_value_is_a_mistake(tmp_path: Path) -> None:
    text = GOOD.replace('op = "gt"', 'op = "exists"')
    error = load_error(tmp_path, text)
    assert error.problem == "rule 'order': where #1: op 'exists' takes no value"
    assert error.line == line_of(text, "value = 0")


def test_inline_rules_report_the_rules_line(tmp_path: Path) -> None:
    text = 'stages = ["a"]\n\nrules = [\n  { stage = "b" },\n]\n'
    error = load_error(tmp_path, text)
    assert error.problem.startswith("rule 'rule-1': unknown stage 'b'")
    assert error.line == 3


def test_model_without_any_way_to_assign_stages_is_rejected(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'stages = ["a"]\n')
    assert "assigns no stage" in error.problem


def test_missing_file_and_unknown_preset(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(JourneyModelError, match="no such file") as info:
        load_model(missing)
    assert (info.value.file, info.value.line) == (missing, None)
    with pytest.raises(JourneyModelError, match=r"unknown preset 'defualt' \(presets: default"):
        load_model("defualt")
    with pytest.raises(JourneyModelError, match=r"must end in \.toml, \.yaml or \.yml"):
        load_model(str(tmp_path / "journey.json"))


def test_error_survives_pickling() -> None:
    error = JourneyModelError("journey.toml", 3, "bad")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.file, copy.line, copy.problem, str(copy)) == (
        "journey.toml",
        3,
        "bad",
        "journey.toml, line 3: bad",
    )


YAML_MODEL = """\
name: shop
stages: [awareness, interest, purchase]
first_touch: awareness
rules:
  - id: signup
    stage: interest
    event: Signed Up
  - id: order
    stage: purchase
    event: [Order Completed]
    type: track
    channel: [web, in_store]
    count: {gte: 1}
    where:
      - property: revenue
        op: gt
        value: 0
      - property: currency
        op: in
        value: [EUR, USD]
"""


def test_yaml_model_equals_its_toml_twin(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    (tmp_path / "a.yaml").write_text(YAML_MODEL, encoding="utf-8")
    (tmp_path / "b.toml").write_text(GOOD, encoding="utf-8")
    from_yaml = load_model(str(tmp_path / "a.yaml"))
    assert from_yaml.fingerprint() == load_model(str(tmp_path / "b.toml")).fingerprint()
    facts = EventFacts(
        "track", "order completed", "in_store", {"revenue": 5, "currency": "EUR"}, []
    )
    assert from_yaml.replay([facts])[1][0].stage == "purchase"


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    text = YAML_MODEL.replace("op: in", "op: within")
    error = load_error(tmp_path, text, "journey.yml")
    assert "rule 'order': where #2: unknown op 'within'" in error.problem
    assert error.line == line_of(text, "op: within")
    syntax = load_error(tmp_path, YAML_MODEL + "  - [unclosed\n", "broken.yaml")
    assert syntax.problem.startswith("invalid YAML")
    assert syntax.line is not None


def test_yaml_nul_characters_are_refused_with_their_line(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    text = YAML_MODEL.replace("- id: order", '- id: "or\\0der"')
    error = load_error(tmp_path, text, "journey.yaml")
    assert "rule 2: 'id' contains a NUL character" in error.problem
    assert error.line == line_of(text, "or\\0der")


def test_yaml_numbers_that_are_not_finite_are_refused_with_their_line(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    for old, new in [("value: 0", f"value: {HUGE}"), ("[EUR, USD]", f"[EUR, {HUGE}]")]:
        text = YAML_MODEL.replace(old, new)
        error = load_error(tmp_path, text, "journey.yaml")
        assert "'value' must be a finite number within ±1.8e308" in error.problem
        assert error.line == line_of(text, HUGE)
    error = load_error(tmp_path, YAML_MODEL.replace("value: 0", "value: .inf"), "journey.yaml")
    assert "must be a finite number within ±1.8e308, got inf" in error.problem


def test_a_value_yaml_cannot_build_is_a_clean_error(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    error = load_error(tmp_path, YAML_MODEL.replace("name: shop", "name: 2026-13-45"), "a.yaml")
    assert error.problem == "invalid YAML: month must be in 1..12"


def test_yaml_without_pyyaml_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` fail
    error = load_error(tmp_path, YAML_MODEL, "journey.yaml")
    assert "YAML models need PyYAML" in error.problem
