"""A scratch database with the migrations applied, for the in-process loops
(``bench.handler``, ``bench.readpath``); dropped on exit."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.kit import embedded
from app.migrate import upgrade


@asynccontextmanager
async def scratch_database(prefix: str) -> AsyncIterator[str]:
    """The URL of a fresh, migrated database on the server of ``PERCORSO_DATABASE_URL`` (or
    ``PERCORSO_TEST_DATABASE_URL``)."""
    admin = os.environ.get("PERCORSO_DATABASE_URL") or os.environ.get("PERCORSO_TEST_DATABASE_URL")
    if not admin:
        raise SystemExit("set PERCORSO_DATABASE_URL to a server that allows a scratch database")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await embedded.ensure_database(admin, name)
    url = embedded.with_database(admin, name)
    try:
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        await embedded.drop_database(admin, name)
