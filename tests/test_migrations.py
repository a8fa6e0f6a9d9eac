"""Migrations build the schema on an empty database and take it all down again."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from app.kit import embedded
from app.migrate import downgrade, upgrade


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        functions = await conn.fetch("SELECT proname FROM pg_proc WHERE proname LIKE 'percorso_%'")
        return {r["tablename"] for r in rows} | {f"fn:{r['proname']}" for r in functions}
    finally:
        await conn.close()


@pytest.fixture
def empty_database(pg_admin_url: str):  # type: ignore[no-untyped-def]
    name = f"percorso_migrations_{secrets.token_hex(3)}"
    asyncio.run(embedded.ensure_database(pg_admin_url, name))
    yield embedded.with_database(pg_admin_url, name)
    asyncio.run(embedded.drop_database(pg_admin_url, name))


def test_migrations_upgrade_an_empty_database_and_downgrade_cleanly(empty_database: str) -> None:
    upgrade(empty_database)
    created = asyncio.run(_tables(empty_database))
    assert {"customers", "identities", "events", "sources", "api_tokens", "dead_letters"} <= created
    assert "fn:percorso_touch_change_xid" in created

    downgrade(empty_database, "base")
    assert asyncio.run(_tables(empty_database)) == {"alembic_version"}

    upgrade(empty_database)  # and up again: downgrade left nothing behind that blocks it
    assert asyncio.run(_tables(empty_database)) == created
