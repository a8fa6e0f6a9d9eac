"""The spool: where the API commits a request's messages when the broker does not
acknowledge them, so that it can still answer 200 (``app.ingest.publisher``).

Guarantees: :meth:`Spool.write` commits a request's messages in one statement, all of
them or none, exactly as they would have been produced (partition, key, value); it refuses
(and the request gets the broker's 503) when the database fails or the spool is full. The
relay (:mod:`app.spool.relay`) publishes them and deletes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

import asyncpg

from app.config import Settings
from app.kit.metrics import SPOOL_BYTES, SPOOL_DEPTH, SPOOL_MESSAGES, SPOOL_REFUSED
from app.spool import repository

log = logging.getLogger(__name__)

# What a database that cannot be reached, or refuses the statement, raises through asyncpg.
DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class Spool:
    """The spool of one API process, on its asyncpg pool.

    Its size is what the relay last measured (every ``spool_check_interval_s``, every
    replica's rows) plus what this process wrote since: other replicas' writes count from
    the next measurement, so the spool may pass ``spool_max_mb`` by what they write in one
    interval."""

    def __init__(self, pool: asyncpg.Pool[Any], settings: Settings) -> None:
        self._pool = pool
        self._max_bytes = settings.spool_max_mb * 1024 * 1024
        self._timeout_s = settings.kafka_publish_timeout_s
        self._measured_bytes = 0
        self._written_bytes = 0  # by this process, since the measurement
        # Set when a request was spooled: the relay looks without waiting for its interval.
        self.written = asyncio.Event()
        self._writing = 0
        self._idle = asyncio.Event()  # no write under way
        self._idle.set()

    def has_room(self) -> bool:
        return self._measured_bytes + self._written_bytes < self._max_bytes

    async def write(self, messages: Sequence[tuple[int, bytes, bytes]]) -> bool:
        """Commit ``(partition, key, value)`` messages, all or none; False when the spool
        is full or the database failed (then none was written, or at worst, with a
        statement the timeout cut short, all were: the client retries, and the pipeline
        drops the duplicates)."""
        size = sum(len(key) + len(value) for _, key, value in messages)
        if self._measured_bytes + self._written_bytes + size > self._max_bytes:
            SPOOL_REFUSED.labels("full").inc()
            return False
        self._writing += 1
        self._idle.clear()
        try:
            async with asyncio.timeout(self._timeout_s), self._pool.acquire() as proxy:
                await repository.insert(cast("asyncpg.Connection[Any]", proxy), messages)
        except DATABASE_ERRORS as exc:
            log.warning("spool write failed: %s", type(exc).__name__)
            SPOOL_REFUSED.labels("database").inc()
            return False
        finally:
            self._writing -= 1
            if not self._writing:
                self._idle.set()
        self._written_bytes += size
        SPOOL_MESSAGES.labels("spooled").inc(len(messages))
        self.written.set()
        return True

    async def settled(self) -> None:
        """Return once no write of this process is under way (each ends within
        ``kafka_publish_timeout_s``): what they committed is in the spool."""
        await self._idle.wait()

    async def measure(self, conn: asyncpg.Connection[Any]) -> int:
        """Measure the spool (every replica's rows) on ``conn``: its size for
        :meth:`write`, and the gauges. Returns the messages in it."""
        messages, size = await repository.measure(conn)
        self._measured_bytes, self._written_bytes = size, 0
        SPOOL_DEPTH.set(messages)
        SPOOL_BYTES.set(size)
        return messages
