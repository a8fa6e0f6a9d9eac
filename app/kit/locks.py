"""The advisory lock that orders every writer of the identity graph.

Every pipeline transaction takes it first, shared (app.pipeline.handler); a transaction
that must not interleave with any of them (a part that lost its retries twice, an erasure,
a change to the suppression list) takes it exclusively. Taken before any other lock, so
waiting for it never closes a cycle: the global lock order is this lock, then customer rows
in ascending id order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from app.errors import ServiceUnavailable

WRITERS_LOCK = 0x70657263_6F72736F  # "percorso"

# How long an administrative transaction waits for a lock (pipeline transactions in flight
# hold the writers' one, shared, for up to a few seconds each; `percorso journey rebuild`
# holds a batch of customer rows) before it gives up.
ADMIN_LOCK_TIMEOUT = "30s"
_TIMEOUT = "SELECT set_config('lock_timeout', $1, true)"


@asynccontextmanager
async def writers_exclusively(conn: asyncpg.Connection[Any]) -> AsyncIterator[None]:
    """A transaction on ``conn`` that holds the writers' lock exclusively: every pipeline
    transaction in flight has committed or rolled back, and none starts until this one
    ends. Every lock its statements wait for (this one, then row locks: a customer that
    `percorso journey rebuild` holds, say) is waited for at most
    :data:`ADMIN_LOCK_TIMEOUT` (``lock_timeout``, for the transaction only); one not granted
    in that time rolls the whole transaction back and raises a 503 with ``Retry-After``."""
    try:
        async with conn.transaction():
            await conn.execute(_TIMEOUT, ADMIN_LOCK_TIMEOUT)  # before the lock's wait begins
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITERS_LOCK)
            yield
    except asyncpg.LockNotAvailableError:
        raise ServiceUnavailable(
            "the pipeline's writers, or a journey rebuild, held their locks too long; retry",
            headers={"Retry-After": "5"},
        ) from None
