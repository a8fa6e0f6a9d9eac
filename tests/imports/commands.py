"""Running `percorso import` as a user does, against the test's database and broker."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import Result
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings


async def run_import(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, kind: str, *args: str
) -> Result:
    """``percorso import KIND ARGS…`` with ``settings``' database, broker and topic."""
    monkeypatch.setenv("PERCORSO_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("PERCORSO_KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers or "")
    monkeypatch.setenv("PERCORSO_KAFKA_TOPIC", settings.kafka_topic)
    return await asyncio.to_thread(CliRunner().invoke, cli, ["import", kind, *args])
