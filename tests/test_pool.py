"""The raw asyncpg pool (app.db.create_pool)."""

from __future__ import annotations

from app.config import Settings
from app.db import create_pool


async def test_a_connection_goes_back_to_the_pool_without_a_reset_statement(
    settings: Settings,
) -> None:
    """Our sessions change no state, so releasing one sends nothing (asyncpg's default
    reset is a round trip of four statements per use)."""
    pool, observer = await create_pool(settings, size=1), await create_pool(settings, size=1)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            assert await conn.fetchval("SELECT 41 + 1") == 42
        last = await observer.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
        assert last == "SELECT 41 + 1"
    finally:
        await pool.close()
        await observer.close()
