"""``percorso journey rebuild`` after a model change, and the commands' handling of bad
model files."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.config import Settings
from app.journey import model as model_module
from app.journey import rebuild
from app.journey.model import JourneyModel, load_model
from app.touchpoint import Touchpoint
from tests.factories import touchpoint
from tests.journey.stored import assert_matches, customer_of, expected, feed, journey

OLD_MODEL = """
stages = ["browsing", "buying"]
first_touch = "browsing"
[[rules]]
stage = "buying"
event = "Order Completed"
"""

SCRIPT = ["Ad Clicked", "Signed Up", "Product Viewed", "Order Completed", "Order Completed"]


async def populate(
    pool: asyncpg.Pool[Any], source_id: uuid.UUID, model: JourneyModel, users: list[str]
) -> dict[str, list[Touchpoint]]:
    streams = {
        user: [
            touchpoint(source_id, user_id=user, event=name, at=60 * n)
            for n, name in enumerate(SCRIPT)
        ]
        for user in users
    }
    await feed(pool, model, *zip(*streams.values(), strict=True))
    return streams


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        env={**os.environ, "PERCORSO_ENVIRONMENT": "test", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_rebuild_recomputes_every_journey_after_a_model_change(
    pool: asyncpg.Pool[Any], source_id: uuid.UUID, model_file: Any
) -> None:
    old, new = model_file(OLD_MODEL), load_model("default")
    streams = await populate(pool, source_id, old, ["ada", "bob", "cy"])
    assert (await journey(pool, "ada")).path == ["browsing", "buying"]
    assert await rebuild.pending(pool, new) == 3

    done: list[int] = []
    assert await rebuild.rebuild_stale(pool, new, batch_size=2, progress=done.append) == 3

    assert done == [2, 1]
    for user, events in streams.items():
        found = await journey(pool, user)
        assert found.path == ["awareness", "interest", "consideration", "purchase", "loyalty"]
        assert_matches(found, expected(new, events), new)
    assert await rebuild.pending(pool, new) == 0
    assert await rebuild.rebuild_stale(pool, new) == 0


async def test_journeys_that_link_scanner_clicks_moved_are_recomputed_after_the_upgrade(
    pool: asyncpg.Pool[Any], source_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    def scan(user: str) -> Touchpoint:
        click = touchpoint(
            source_id, user_id=user, event="Email Link Clicked", channel="email", at=60
        )
        click.flags.extend(["machine_activity", "machine:barracuda"])
        return click

    streams = {
        user: [touchpoint(source_id, user_id=user, event="Order Completed"), scan(user)]
        for user in ("ada", "bob")
    }
    with monkeypatch.context() as engine_1:  # as the engine before version 2 stored them
        engine_1.setattr(model_module, "ENGINE_VERSION", 1)
        engine_1.setattr(model_module, "MACHINE_FLAG", "(engine 1 read no flags)")
        await feed(pool, load_model("default"), *zip(*streams.values(), strict=True))
    assert (await journey(pool, "ada")).path == ["purchase", "interest"]

    model = load_model("default")
    assert await rebuild.pending(pool, model) == 2
    # Ada's next event recomputes her whole journey; the rebuild does Bob's.
    opened = touchpoint(source_id, user_id="ada", event="Email Opened", channel="email", at=120)
    streams["ada"].append(opened)
    await feed(pool, model, [opened])
    assert await rebuild.pending(pool, model) == 1
    assert await rebuild.rebuild_stale(pool, model) == 1

    for user, events in streams.items():
        found = await journey(pool, user)
        assert (found.current_stage, found.path) == ("purchase", ["purchase"])
        assert_matches(found, expected(model, events), model)


async def test_an_interrupted_rebuild_resumes_where_it_stopped(
    pool: asyncpg.Pool[Any], source_id: uuid.UUID, model_file: Any
) -> None:
    old, new = model_file(OLD_MODEL), load_model("default")
    users = [f"u{n}" for n in range(5)]
    streams = await populate(pool, source_id, old, users)

    def crash_after_first_batch(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await rebuild.rebuild_stale(pool, new, batch_size=2, progress=crash_after_first_batch)
    assert await rebuild.pending(pool, new) == 3  # the first batch was committed

    assert await rebuild.rebuild_stale(pool, new, batch_size=2) == 3
    for user in users:
        assert_matches(await journey(pool, user), expected(new, streams[user]), new)


async def test_rebuild_runs_next_to_the_pipeline_without_deadlocks(
    pool: asyncpg.Pool[Any], source_id: uuid.UUID, model_file: Any
) -> None:
    old, new = model_file(OLD_MODEL), load_model("default")
    users = [f"u{n}" for n in range(40)]
    streams = await populate(pool, source_id, old, users)
    more = {
        user: [touchpoint(source_id, user_id=user, event="Review Submitted", at=600)]
        for user in users
    }

    # The consumers already run the new model; the rebuild catches up with the rest.
    await asyncio.gather(
        rebuild.rebuild_stale(pool, new, batch_size=3),
        feed(pool, new, *([tps[0]] for tps in more.values())),
    )

    for user in users:
        found = await journey(pool, user)
        assert_matches(found, expected(new, streams[user] + more[user]), new)
        assert found.current_stage == "advocacy"


async def test_the_rebuild_command_shows_progress_and_can_target_one_customer(
    settings: Settings, pool: asyncpg.Pool[Any], source_id: uuid.UUID, model_file: Any
) -> None:
    old = model_file(OLD_MODEL)
    await populate(pool, source_id, old, ["ada", "bob"])
    env = {
        "PERCORSO_DATABASE_URL": settings.database_url or "",
        "PERCORSO_JOURNEY_MODEL": "default",
    }

    ada = await customer_of(pool, "ada")
    code, out, err = await run_cli("journey", "rebuild", "--customer", str(ada), env=env)
    assert (code, err) == (0, "")
    assert f"recomputed customer {ada}" in out
    assert (await journey(pool, "ada")).current_stage == "loyalty"
    assert (await journey(pool, "bob")).current_stage == "buying"

    code, out, _ = await run_cli("journey", "rebuild", env=env)
    assert code == 0
    assert "recomputed 1 journeys" in out
    assert (await journey(pool, "bob")).current_stage == "loyalty"

    code, out, _ = await run_cli("journey", "rebuild", env=env)
    assert (code, out.strip()) == (0, "every journey is up to date with model 'default'")

    code, _, err = await run_cli("journey", "rebuild", "--customer", str(uuid.uuid4()), env=env)
    assert code == 1
    assert "no customer" in err


BAD_MODELS = {
    "unknown-stage.toml": (
        'stages = ["a", "b"]\n\n[[rules]]\nstage = "c"\n',
        "line 4: rule 'rule-1': unknown stage 'c'",
    ),
    "syntax.toml": (
        'stages = ["a"]\nfirst_touch = a\n',
        "line 2: invalid TOML: Invalid value (column 15)",
    ),
    "unclosed.toml": (
        'name = "x"\nstages = ["a", "b"\n',
        "line 2: invalid TOML: Unclosed array (at the end of the file)",
    ),
    "typo.toml": (
        'stages = ["a"]\nfirst_touch = "a"\n[[rules]]\nstage = "a"\nevnet = "X"\n',
        "line 5: rule 'rule-1': unknown key 'evnet' (did you mean 'event'?)",
    ),
}


@pytest.mark.parametrize("command", [["api"], ["consume"], ["journey", "rebuild"]])
@pytest.mark.parametrize("name", list(BAD_MODELS))
async def test_a_bad_model_file_stops_each_command_with_file_line_and_problem(
    tmp_path: Path, command: list[str], name: str
) -> None:
    text, problem = BAD_MODELS[name]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    env = {
        "PERCORSO_JOURNEY_MODEL": str(path),
        # Never reached: the model is checked first.
        "PERCORSO_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "PERCORSO_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    }

    code, out, err = await run_cli(*command, env=env)

    assert code == 2
    assert f"error: invalid journey model: {path}, {problem}" in err
    assert "Traceback" not in err + out


async def test_check_validates_a_model_and_prints_its_rules(tmp_path: Path) -> None:
    code, out, _ = await run_cli("journey", "check", "omnichannel", env={})
    assert code == 0
    assert "preset:omnichannel: model 'omnichannel' is valid" in out
    assert f"fingerprint {load_model('omnichannel').fingerprint()}" in out
    assert (
        "| 1 | `repeat-purchase` | loyalty | Order Completed, In-Store Purchase | count ≥ 2 |"
        in out
    )

    code, _, err = await run_cli("journey", "check", str(tmp_path / "missing.toml"), env={})
    assert code == 2
    assert "missing.toml: no such file" in err


# Models that `check` passed (and then the pipeline dead-lettered their events) or crashed
# on with a traceback: what the error says after the file's name.
REFUSED_BY_CHECK = {
    "nul.toml": (
        'stages = ["seen", "b\\u0000ught"]\nfirst_touch = "seen"\n',
        ", line 1: stage 'b\\x00ught' contains a NUL character (\\u0000), which PostgreSQL",
    ),
    "huge.toml": (
        'stages = ["seen", "big"]\nfirst_touch = "seen"\n[[rules]]\nstage = "big"\n'
        '[[rules.where]]\nproperty = "revenue"\nop = "gt"\nvalue = 1' + "0" * 400 + "\n",
        ", line 8: rule 'rule-1': where #1: 'value' must be a finite number within ±1.8e308",
    ),
    "deep.toml": ("stages = " + "[" * 5000 + "]" * 5000 + "\n", ": invalid TOML: nesting too deep"),
}


@pytest.mark.parametrize("name", list(REFUSED_BY_CHECK))
async def test_check_refuses_a_model_the_pipeline_could_not_run_with(
    tmp_path: Path, name: str
) -> None:
    text, after_file = REFUSED_BY_CHECK[name]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")

    code, out, err = await run_cli("journey", "check", str(path), env={})

    assert (code, out) == (2, "")
    assert f"error: invalid journey model: {path}{after_file}" in err
    assert "Traceback" not in err
