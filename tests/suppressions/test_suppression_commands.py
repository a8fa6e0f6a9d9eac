"""`percorso suppressions add|check|remove` against the real database: the same list the
API and the pipeline read."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import Result
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings
from tests.helpers import scalar


@pytest.fixture
def percorso(settings: Settings, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PERCORSO_DATABASE_URL", settings.database_url or "")
    return CliRunner()


async def _run(runner: CliRunner, *args: str) -> Result:
    return await asyncio.to_thread(runner.invoke, cli, list(args))


async def test_an_identifier_is_suppressed_checked_and_lifted_from_the_command_line(
    percorso: CliRunner, db: AsyncEngine
) -> None:
    added = await _run(percorso, "suppressions", "add", "email", "Ada@Example.com")
    assert added.exit_code == 0, added.output
    assert "email suppressed" in added.stdout
    again = await _run(percorso, "suppressions", "add", "email", "ada@example.com ")
    assert "suppressed already" in again.stdout
    assert await scalar(db, "SELECT count(*) FROM suppressions WHERE reason = 'request'") == 1

    checked = await _run(percorso, "suppressions", "check", "email", "ADA@example.com")
    assert checked.exit_code == 0
    assert "suppressed (request) since" in checked.stdout

    removed = await _run(percorso, "suppressions", "remove", "email", "ada@example.com")
    assert removed.exit_code == 0, removed.output
    assert await scalar(db, "SELECT count(*) FROM suppressions") == 0
    for args in (("check", "email", "ada@example.com"), ("remove", "email", "ada@example.com")):
        absent = await _run(percorso, "suppressions", *args)
        assert absent.exit_code == 2
        assert "not suppressed" in absent.stderr
    invalid = await _run(percorso, "suppressions", "add", "email", "not-an-email")
    assert invalid.exit_code == 2
    assert "never identifies anyone" in invalid.stderr
