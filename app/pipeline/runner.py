"""The consumer process: poll batches, hand them to the handler, then commit offsets.

Order of effects per batch: database commit → dead letters on the DLQ topic, then noted
as published → Kafka offset commit (``offset + 1``). A crash anywhere before the offset
commit redelivers the batch, and the handler's dedupe drops what was already stored:
at-least-once in, exactly-once on the timeline and in ``dead_letters``. A letter goes on the
topic again only if the crash came before it was noted as published.

Behind a backlog, a batch is several fetches (`Pipeline._top_up`), so it is stored in
large runs. Batches overlap: the next batch is decoded while the last run of the one before
is stored (`BatchHandler.begin`); offsets are committed batch by batch, in order, each once
its batch is stored. At most two batches are in hand.

Rebalances: the batches in flight hold ``_in_flight``; ``on_partitions_revoked`` stops new
ones and waits for them, so a batch is always finished and committed before its partitions
move.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from app.config import Settings
from app.db import create_pool
from app.identity.policy import MergePolicy
from app.journey.model import JourneyModel, load_model
from app.kit import gc
from app.kit.kafka import bootstrap, create_producer
from app.kit.metrics import PIPELINE_BATCH_SECONDS
from app.pipeline.handler import BatchHandler, Outcome, Record
from app.pipeline.opener import EnvelopeOpener

log = logging.getLogger(__name__)

# What one poll gives: each partition's messages, in order.
Batches = dict[TopicPartition, list[Any]]
# A fetch of at least this many records means a backlog: the batch takes the fetches that
# follow too (`Pipeline._top_up`). A consumer that keeps up gets far fewer per fetch (a
# request's envelopes, or single calls) and stores what it has at once.
BACKLOG_RECORDS = 1_000


class _FinishBatchFirst(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, in_flight: asyncio.Lock, revoking: asyncio.Event) -> None:
        self._in_flight = in_flight
        self._revoking = revoking

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._revoking.set()  # the consumer begins no further batch until they have moved
        try:
            async with self._in_flight:
                log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))
        finally:
            self._revoking.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))


class Pipeline:
    """One consumer-group member. Run several processes to share the partitions."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool[Any],
        model: JourneyModel,
        collector: gc.BetweenBatches | None = None,
    ) -> None:
        self._settings = settings
        self._collector = collector  # garbage collection between batches, if the process wants it
        policy = MergePolicy.parse(settings.merge_limits, settings.merge_priority)
        identity = settings.identity_config()
        workers = settings.pipeline_decode_workers
        self._opener = EnvelopeOpener(identity, workers) if workers else None
        self._handler = BatchHandler(
            pool,
            model,
            policy,
            settings.pipeline_batch_parts,
            identity,
            settings.pipeline_run_events,
            self._opener,
        )
        self._in_flight = asyncio.Lock()
        self._revoking = asyncio.Event()
        self._stopping = asyncio.Event()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap(settings),
            group_id=settings.kafka_consumer_group,
            client_id="percorso-pipeline",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.pipeline_max_batch,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_wait_ms=settings.pipeline_fetch_max_wait_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            rebalance_timeout_ms=max(60_000, settings.kafka_session_timeout_ms),
        )
        self._dlq = create_producer(settings)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self._dlq.start()
        listener = _FinishBatchFirst(self._in_flight, self._revoking)
        self._consumer.subscribe([self._settings.kafka_topic], listener=listener)
        await self._consumer.start()
        log.info(
            "pipeline consuming %s as group %s",
            self._settings.kafka_topic,
            self._settings.kafka_consumer_group,
        )
        # Batches begun and not yet finished, oldest first: at most two, the newer one
        # being decoded while the older one's last run is stored.
        in_hand: deque[tuple[Batches, asyncio.Future[Outcome]]] = deque()
        holding = False  # this loop holds _in_flight (exactly while batches are in hand)
        try:
            while not self._stopping.is_set():
                keep = 0
                # No new batch while a revoke waits, nor beside one already settled: it is
                # finished first (and should it have failed, nothing is begun after it).
                if not (in_hand and (self._revoking.is_set() or in_hand[-1][1].done())):
                    batches = await self._consumer.getmany(
                        # With a batch in hand, only what has been fetched already.
                        timeout_ms=0 if in_hand else self._settings.pipeline_poll_timeout_ms,
                        max_records=self._settings.pipeline_max_batch,
                    )
                    if batches:
                        if not holding:
                            await self._in_flight.acquire()
                            holding = True
                        await self._top_up(batches)
                        in_hand.append((batches, await self._begin(batches)))
                        keep = 1
                while len(in_hand) > keep:
                    await self._finish(*in_hand.popleft())
                    if self._collector is not None:
                        self._collector.after_batch(busy=bool(in_hand))
                if holding and not in_hand:
                    self._in_flight.release()
                    holding = False
            while in_hand:
                await self._finish(*in_hand.popleft())
        finally:
            for _, stored in in_hand:  # not acknowledged: redelivered to whoever goes on
                if not stored.cancel() and not stored.cancelled():
                    stored.exception()  # raised already, or the cause of what was
            if holding:
                self._in_flight.release()
            await self._consumer.stop()
            await self._dlq.stop()
            if self._opener is not None:
                self._opener.close()

    async def _top_up(self, batches: Batches) -> None:
        """Behind a backlog, add the fetches that follow to ``batches``, up to
        ``PIPELINE_MAX_BATCH`` records: larger batches are stored in larger runs."""
        count = added = sum(map(len, batches.values()))
        limit = self._settings.pipeline_max_batch
        while added >= BACKLOG_RECORDS and count < limit and not self._revoking.is_set():
            more = await self._consumer.getmany(
                # Behind a backlog the broker answers at once.
                timeout_ms=self._settings.pipeline_fetch_max_wait_ms,
                max_records=limit - count,
            )
            for tp, messages in more.items():
                batches.setdefault(tp, []).extend(messages)
            added = sum(map(len, more.values()))
            count += added

    async def _begin(self, batches: Batches) -> asyncio.Future[Outcome]:
        records = [
            # A record without a value (a tombstone) is an empty one: the handler
            # dead-letters it.
            Record(tp.topic, tp.partition, m.offset, m.key, m.value or b"")
            for tp, messages in batches.items()
            for m in messages
        ]
        started = time.perf_counter()
        stored = await self._handler.begin(records)

        def timed(done: asyncio.Future[Outcome]) -> None:
            if not done.cancelled() and done.exception() is None:
                PIPELINE_BATCH_SECONDS.observe(time.perf_counter() - started)

        stored.add_done_callback(timed)
        return stored

    async def _finish(self, batches: Batches, stored: asyncio.Future[Outcome]) -> None:
        """Once the batch is stored: its dead letters to their topic, then its offsets."""
        outcome = await stored
        await self._publish_dead_letters(outcome)
        offsets = {tp: messages[-1].offset + 1 for tp, messages in batches.items()}
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced under us; whoever gets these partitions re-reads
            # the batch and the dedupe drops it (its dead letters too: published already).
            log.warning("offset commit failed after a rebalance; the batch will be redelivered")
        log.debug(
            "batch: %d stored, %d duplicates, %d dead",
            outcome.stored,
            outcome.duplicates,
            len(outcome.dead_letters),
        )

    async def _publish_dead_letters(self, outcome: Outcome) -> None:
        letters = outcome.dead_letters
        if not letters:
            return
        pending = [
            await self._dlq.send(
                self._settings.kafka_dead_letter_topic, d.payload, key=d.key, headers=d.headers()
            )
            for d in letters
        ]
        await asyncio.gather(*pending)
        await self._handler.mark_published(letters)


async def consume(settings: Settings) -> None:
    """Run one pipeline member until SIGINT/SIGTERM."""
    model = load_model(settings.journey_model)
    pool = await create_pool(settings, size=settings.pipeline_batch_parts)
    collector = gc.BetweenBatches()
    pipeline = Pipeline(settings, pool, model, collector)
    collector.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, pipeline.stop)
    if settings.pipeline_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.pipeline_metrics_port, addr=settings.http_host)
    try:
        await pipeline.run()
    except KafkaError:
        log.exception("the broker failed")
        raise
    finally:
        await pool.close()
