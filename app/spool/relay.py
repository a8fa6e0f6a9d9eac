"""The relay: a task of each API process that publishes the spool's messages to the broker
and deletes them, oldest first.

Guarantees:

* At least once. A chunk of rows is taken ``FOR UPDATE``, published with
  ``acks=all``, then deleted, in one transaction: a crash or a failure anywhere before the
  commit leaves the rows for the next try, which publishes them again, and the pipeline
  drops the duplicates at ``(source_id, message_id)`` (batch envelopes' calls included).
* In order. Relays take turns, one chunk at a time (a transaction-level advisory lock,
  :data:`repository.SPOOL_LOCK`): a chunk is taken only once the one before it was
  published and deleted, or rolled back, so the spool reaches each partition in the order
  of its ids, whichever processes and replicas relay it. Rows a dead replica left are
  found by the others' periodic look (every ``spool_check_interval_s``: one aggregate over
  the spool, nothing when it is empty).
* A message goes to the partition it was placed in while that partition exists, else to
  its key's partition among those there are now (:func:`placed`).
* Spooling mode ends only once a pass caught up (took less than a full chunk) with the
  broker answering, in a handover (:meth:`Publisher.handover`): new requests of the
  process wait, its spool writes under way finish, what they wrote is relayed, and only
  then do requests go to the broker again, so none overtakes a message this process
  spooled before it. (Another process's spool writes are not waited for: across processes
  and replicas the order at the switch is approximate.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, cast

import asyncpg

from app.config import Settings
from app.ingest.publisher import BrokerUnavailable, Publisher, partition_for
from app.kit.metrics import SPOOL_MESSAGES
from app.spool import repository
from app.spool.service import DATABASE_ERRORS, Spool

log = logging.getLogger(__name__)

# Rows published in one transaction. A row is at most a batch envelope (512 KiB of calls,
# app.ingest.envelope), most are one event: a chunk of envelopes alone is 100 MiB of values,
# one of single events a few MB. Relays take turns (SPOOL_LOCK), so of all the API's
# processes one holds a chunk at a time.
CHUNK = 200


def placed(
    rows: Sequence[tuple[int, bytes, bytes]], partitions: int
) -> list[tuple[int, bytes, bytes]]:
    """The rows' ``(partition, key, value)`` messages for a topic of ``partitions``
    partitions: each where it was placed while that partition exists, else where its key
    goes now (:func:`partition_for`)."""
    return [
        (partition if partition < partitions else partition_for(key, partitions), key, value)
        for partition, key, value in rows
    ]


class Relay:
    def __init__(
        self, publisher: Publisher, spool: Spool, pool: asyncpg.Pool[Any], settings: Settings
    ) -> None:
        self._publisher = publisher
        self._spool = spool
        self._pool = pool
        self._interval_s = settings.spool_check_interval_s
        self._timeout_s = settings.kafka_publish_timeout_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Look at the spool, then relay in the background. Rows found (this replica's
        before a restart, say) put the process in spooling mode, so that the requests it
        takes go behind them; the relay's first pass is then at once. A database that does
        not answer within ``kafka_publish_timeout_s`` is logged and the process starts."""
        try:
            async with asyncio.timeout(self._timeout_s), self._pool.acquire() as proxy:
                if messages := await self._spool.measure(cast("asyncpg.Connection[Any]", proxy)):
                    self._publisher.spool_behind(messages)
        except DATABASE_ERRORS as exc:
            log.warning("spool relay: no look at the spool at start: %s", type(exc).__name__)
        self._task = asyncio.create_task(self._run(), name="spool-relay")

    async def stop(self) -> None:
        """Cancel the relay; a chunk in flight is rolled back (its rows stay spooled)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            # Woken when this process spools, or after the interval (other replicas' rows).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._spool.written.wait()
            self._spool.written.clear()
            try:
                await self.run_once()
            except (BrokerUnavailable, *DATABASE_ERRORS) as exc:
                log.warning(
                    "spool relay: %s; trying again in %gs", type(exc).__name__, self._interval_s
                )
                await asyncio.sleep(self._interval_s)
            except Exception:  # a bug: said loudly, and the relay goes on
                log.exception("spool relay failed")
                await asyncio.sleep(self._interval_s)

    async def run_once(self) -> int:
        """Look at the spool; if it holds messages or this process is spooling, relay
        until caught up, and end spooling mode. Returns the messages relayed. Raises
        :class:`BrokerUnavailable` or a database error (the rows of the failed chunk stay)."""
        async with self._pool.acquire() as proxy:
            conn = cast("asyncpg.Connection[Any]", proxy)
            if not await self._spool.measure(conn) and not self._publisher.spooling:
                return 0
            relayed = await self._drain(conn)
            # Relayed messages prove the broker is back; with none, ask it.
            if self._publisher.spooling and (relayed or await self._publisher.ready()):
                async with self._publisher.handover():
                    await self._spool.settled()
                    # Up to the newest row now: this process's rows are all there, and
                    # other processes spooling on cannot keep its requests waiting.
                    if (upto := await repository.last(conn)) is not None:
                        relayed += await self._drain(conn, upto)
                    self._publisher.stop_spooling()
            await self._spool.measure(conn)
        return relayed

    async def _drain(self, conn: asyncpg.Connection[Any], upto: int | None = None) -> int:
        """Relay chunks (of rows up to id ``upto``, when given) until one is not full; the
        messages relayed."""
        relayed = 0
        while (done := await self._relay_chunk(conn, upto)) == CHUNK:
            relayed += done
        return relayed + done

    async def _relay_chunk(self, conn: asyncpg.Connection[Any], upto: int | None) -> int:
        async with conn.transaction():
            rows = await repository.take(conn, CHUNK, upto)
            if not rows:
                return 0
            messages = [(row["partition"], row["key"], row["value"]) for row in rows]
            await self._publisher.publish_placed(
                lambda partitions: placed(messages, partitions), spool=False
            )
            await repository.delete(conn, [row["id"] for row in rows])
        SPOOL_MESSAGES.labels("relayed").inc(len(rows))
        return len(rows)
