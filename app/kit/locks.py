"""The advisory lock that orders every writer of the identity graph.

Every pipeline transaction takes it first, shared (app.pipeline.handler); a transaction
that must not interleave with any of them (a part that lost its retries twice, an erasure,
a change to the suppression list) takes it exclusively. Taken before any other lock, so
waiting for it never closes a cycle: the global lock order is this lock, then customer rows
in ascending id order.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from app.errors import ServiceUnavailable

WRITERS_LOCK = 0x70657263_6F72736F  # "percorso"

# How long an administrative transaction waits for the lock (pipeline transactions in
# flight hold it, shared, for up to a few seconds each) before it gives up.
ADMIN_LOCK_TIMEOUT = "30s"
_TIMEOUT = "SELECT set_config('lock_timeout', $1, true)"


async def lock_writers_exclusively(conn: asyncpg.Connection[Any]) -> None:
    """Take the writers' lock exclusively for the rest of the caller's transaction: every
    pipeline transaction in flight has committed or rolled back, and none starts until this
    one ends. Its other statements may then wait on row locks for up to
    :data:`ADMIN_LOCK_TIMEOUT` too (``lock_timeout``, for the transaction only): a lock
    not granted in that time is a 503 with ``Retry-After`` (the transaction is then
    aborted, and rolls back with the caller's block)."""
    await conn.execute(_TIMEOUT, ADMIN_LOCK_TIMEOUT)  # before the lock's wait begins
    try:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITERS_LOCK)
    except asyncpg.LockNotAvailableError:
        raise ServiceUnavailable(
            "the pipeline's writers held their lock too long; retry", headers={"Retry-After": "5"}
        ) from None
