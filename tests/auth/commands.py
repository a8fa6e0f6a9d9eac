"""Running the `percorso sources|tokens` commands in tests, against the test database."""

from __future__ import annotations

import asyncio
import re

import pytest
from click.testing import Result
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings


@pytest.fixture
def percorso(settings: Settings, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PERCORSO_DATABASE_URL", settings.database_url or "")
    # What the commands say about running APIs' credential cache.
    monkeypatch.setenv("PERCORSO_AUTH_CACHE_TTL_S", "45")
    return CliRunner()


async def run(runner: CliRunner, *args: str) -> Result:
    return await asyncio.to_thread(runner.invoke, cli, list(args))


async def create_source(runner: CliRunner, name: str, *args: str) -> str:
    """``percorso sources create --name NAME ARGS…``; the write key it prints."""
    created = await run(runner, "sources", "create", "--name", name, *args)
    assert created.exit_code == 0, created.output
    return created.stdout.strip()


def table(listing: str) -> list[dict[str, str]]:
    """The rows of a listing the commands print, each by its header's column names (columns
    start where their names do; a name is words one space apart)."""
    header, *lines = listing.splitlines()
    columns = [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    ends = [start for _, start in columns[1:]] + [None]
    return [
        {name: line[start:end].strip() for (name, start), end in zip(columns, ends, strict=True)}
        for line in lines
    ]
