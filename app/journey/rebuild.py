"""Recomputing stored journeys after a model change (``percorso journey rebuild``).

Guarantees:

* Processes exactly the live (not merged-away) customers whose journey was not computed by
  the given model (``customers.journey_model`` differs from its fingerprint), or one named
  customer regardless of that.
* Batches of customers, one transaction each. A batch locks its customer rows with
  ``SELECT … ORDER BY id … FOR UPDATE`` — ascending ids, the order the pipeline uses for
  customer rows (the only locks either takes) — so rebuild and
  consumers can run at the same time without deadlocking; a consumer waits at most for one
  batch.
* Resumable: a finished batch is committed with the new fingerprint, so an interrupted run
  started again skips what it already did.
* Consumers running a different model than the rebuild would recompute those customers
  back on their next event: roll the new model out to the consumers first.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, cast

import asyncpg

from app.journey import writes
from app.journey.history import recompute
from app.journey.model import JourneyModel

DEFAULT_BATCH: Final = 500
# A merge chain longer than this is a bug; stop following it rather than loop.
_MAX_MERGE_HOPS: Final = 16


@asynccontextmanager
async def _transaction(pool: asyncpg.Pool[Any]) -> AsyncIterator[asyncpg.Connection[Any]]:
    async with pool.acquire() as proxy, proxy.transaction():
        # The pool hands out a proxy that forwards every Connection method.
        yield cast("asyncpg.Connection[Any]", proxy)


class UnknownCustomer(Exception):
    """No customer has the id given to `rebuild_customer`."""


async def pending(pool: asyncpg.Pool[Any], model: JourneyModel) -> int:
    """How many customers a `rebuild_stale` would process now."""
    async with _transaction(pool) as conn:
        return await writes.count_stale_customers(conn, model.fingerprint())


async def rebuild_stale(
    pool: asyncpg.Pool[Any],
    model: JourneyModel,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Recompute every customer whose journey another model computed. Returns how many;
    `progress` is called with each committed batch's size."""
    fingerprint = model.fingerprint()
    done = 0
    after: uuid.UUID | None = None
    while True:
        async with _transaction(pool) as conn:
            ids = await writes.lock_stale_customers(conn, fingerprint, after, batch_size)
            if not ids:
                return done
            await recompute(conn, model, ids)
        done += len(ids)
        after = ids[-1]
        if progress is not None:
            progress(len(ids))


async def rebuild_customer(
    pool: asyncpg.Pool[Any], model: JourneyModel, customer_id: uuid.UUID
) -> uuid.UUID:
    """Recompute one customer's journey (a merged id: its survivor's). Returns the id
    recomputed; raises `UnknownCustomer`."""
    async with _transaction(pool) as conn:
        for _ in range(_MAX_MERGE_HOPS):
            survivor = await writes.survivor_of(conn, customer_id, _MAX_MERGE_HOPS)
            if survivor is None:
                raise UnknownCustomer(f"no customer {customer_id}")
            # Followed without locks (locking a loser, then its survivor, could invert the
            # ascending-id lock order); the survivor is checked again under its lock.
            if await writes.lock_customer(conn, survivor) is None:
                await recompute(conn, model, [survivor])
                return survivor
        raise UnknownCustomer(f"customer {customer_id}: keeps being merged; try again")
