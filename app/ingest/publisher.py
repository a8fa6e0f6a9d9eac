"""Publishing touchpoints to Kafka.

Guarantee: :meth:`Publisher.publish` returns only after the broker acknowledged every
message with ``acks=all``, or, when it did not and the spool is on, after the messages
were committed to the spool (``app.spool``), whose relay publishes them later; otherwise it
raises :class:`BrokerUnavailable` (the API answers 503 with Retry-After, and the client
retries — duplicates die at the pipeline's dedupe key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder
from murmurhash2 import murmurhash2

from app.config import Settings
from app.errors import ServiceUnavailable
from app.kit.kafka import create_producer
from app.kit.metrics import SPOOLING

if TYPE_CHECKING:
    from app.spool.service import Spool

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class BrokerUnavailable(ServiceUnavailable):
    type = "broker-unavailable"
    title = "The event broker is unavailable"


Placement = Callable[[int], Sequence[tuple[int, bytes, bytes]]]


class Publisher:
    """Owns the API's producer. Starts lazily so the API can come up before the broker.

    With a spool, a failure to publish puts it in spooling mode: every request's messages
    go to the spool, behind those before them, without waiting on the broker, until the
    relay has drained the spool with the broker back. It ends in a handover
    (:meth:`handover`): new requests wait while the spool writes under way finish and the
    relay publishes what they wrote, so no request reaches the broker ahead of messages
    this process spooled before it."""

    def __init__(self, settings: Settings, spool: Spool | None = None) -> None:
        self._settings = settings
        self._spool = spool
        self._spooling = False
        # While the relay hands over from the spool to the broker: done when it has.
        self._handover: asyncio.Future[None] | None = None
        self._topic = settings.kafka_topic
        self._producer: AIOKafkaProducer | None = None
        # Per partition: the batch messages are being added to, and its delivery.
        self._open: dict[int, tuple[BatchBuilder, asyncio.Task[asyncio.Future[Any]]]] = {}
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        try:
            await self._ensure()
        except BrokerUnavailable as exc:
            log.warning("broker not reachable at start; will retry on the first request")
            if self._spool is not None:
                self._start_spooling(f"the broker did not acknowledge ({type(exc).__name__})")

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._starting:
            if self._producer is None:
                producer = create_producer(self._settings)
                try:
                    await asyncio.wait_for(producer.start(), self._settings.kafka_publish_timeout_s)
                except (KafkaError, OSError, TimeoutError) as exc:
                    await producer.stop()
                    raise self._unavailable() from exc
                except asyncio.CancelledError:
                    # The request went (its client, a probe's deadline) while it started.
                    await producer.stop()
                    raise
                self._producer = producer
        return self._producer

    async def publish(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Send ``(key, value)`` pairs and wait until the broker acknowledged all of them.
        A key always goes to the partition the Java client (and aiokafka's default
        partitioner) would choose, so other producers of the topic agree with this one."""

        def place(partitions: int) -> list[tuple[int, bytes, bytes]]:
            return [(partition_for(key, partitions), key, value) for key, value in messages]

        await self.publish_placed(place)

    async def publish_placed(self, place: Placement, *, spool: bool = True) -> None:
        """Send the ``(partition, key, value)`` messages that ``place`` makes for the
        topic's partition count now, and wait until the broker acknowledged all of them;
        or, in spooling mode or when the broker does not acknowledge, commit them to the
        spool. ``spool=False`` (the relay's) publishes or raises, whatever the mode."""
        if spool and self._handover is not None:
            await self._handed_over()
        if self._spooling and spool:
            await self._spool_placed(place)
            return
        try:
            producer = await self._ensure()
            async with asyncio.timeout(self._settings.kafka_publish_timeout_s):
                partitions = await self._partition_count(producer)
                deliveries = {
                    self._append(producer, partition, key, value)
                    for partition, key, value in place(partitions)
                }
                for delivery in deliveries:
                    # Both shielded: the batch, its queueing and its ack are shared with
                    # other requests, and this request giving up must cancel neither.
                    await asyncio.shield(await asyncio.shield(delivery))
        except (KafkaError, TimeoutError, BrokerUnavailable) as exc:
            log.warning("publish failed: %s", type(exc).__name__)
            if not spool or self._spool is None:
                raise self._unavailable() from exc
            await self._handed_over()
            # Some messages may have reached the broker (or still will: their batches go
            # on): spooled too, they are duplicates the pipeline drops.
            self._start_spooling(f"the broker did not acknowledge ({type(exc).__name__})")
            await self._spool_placed(place)

    @property
    def spooling(self) -> bool:
        return self._spooling

    def spool_behind(self, messages: int) -> None:
        """Spooling mode for a spool that holds ``messages`` already (found as the process
        starts): new requests go behind them, not ahead to the broker."""
        self._start_spooling(f"the spool holds {messages} messages")

    def _start_spooling(self, cause: str) -> None:
        assert self._spool is not None
        if not self._spooling:
            self._spooling = True
            SPOOLING.set(1)
            log.warning(
                "spooling mode: %s; new events go to the spool until the relay has drained it",
                cause,
            )
        self._spool.written.set()

    @contextlib.asynccontextmanager
    async def handover(self) -> AsyncIterator[None]:
        """The relay's way out of spooling mode: inside, new requests wait (neither spooled
        nor published) until it ends; the relay waits for the spool writes under way
        (:meth:`Spool.settled`), publishes what is left and calls :meth:`stop_spooling`.
        Left without that call (the broker failed again), the waiting requests spool."""
        assert self._handover is None
        self._handover = asyncio.get_running_loop().create_future()
        try:
            yield
        finally:
            self._handover.set_result(None)
            self._handover = None

    async def _handed_over(self) -> None:
        while self._handover is not None:
            await asyncio.shield(self._handover)

    def stop_spooling(self) -> None:
        """Publish to the broker again: the relay drained the spool with the broker back,
        the spool writes of this process included (:meth:`handover`)."""
        if self._spooling:
            self._spooling = False
            SPOOLING.set(0)
            log.warning("spooling mode ends: the spool is drained; publishing to the broker")

    async def _spool_placed(self, place: Placement) -> None:
        assert self._spool is not None
        if not await self._spool.write(place(self._known_partitions())):
            raise self._unavailable()

    def _known_partitions(self) -> int:
        """The topic's partition count as last seen, without asking the broker: the count
        `percorso migrate` creates if it never answered."""
        producer = self._producer
        seen = producer.client.cluster.partitions_for_topic(self._topic) if producer else None
        return len(seen) if seen else self._settings.kafka_partitions

    def _append(
        self, producer: AIOKafkaProducer, partition: int, key: bytes, value: bytes
    ) -> asyncio.Task[asyncio.Future[Any]]:
        """Add one message to the partition's open batch (shared by every request in the
        process) and return its delivery: a task whose result is the batch's ack future.

        What aiokafka's ``send`` does, minus a coroutine, a future, a partitioner call and
        a metadata lookup per message. The batch stays open while it waits for its turn
        (the partition's batch before it unsent, the broker's produce request in flight),
        so concurrent requests share produce requests without a linger; once the sender
        takes it (closing it), ``append`` refuses and a new batch starts."""
        current = self._open.get(partition)
        appended = current and current[0].append(key=key, value=value, timestamp=None)
        if current is not None and appended is not None:
            return current[1]
        builder = producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:
            raise KafkaError("a message larger than a whole batch")  # events are ≤ 32 KB
        delivery: asyncio.Task[asyncio.Future[Any]] = asyncio.ensure_future(
            producer.send_batch(builder, self._topic, partition=partition)
        )
        entry = (builder, delivery)
        self._open[partition] = entry

        def forget(task: asyncio.Task[asyncio.Future[Any]]) -> None:
            # A batch that never got queued (timeout, producer closed) must not collect
            # messages nobody will send.
            if task.cancelled() or task.exception() is not None:
                builder.close()
                if self._open.get(partition) is entry:
                    del self._open[partition]

        delivery.add_done_callback(forget)
        return delivery

    async def _partition_count(self, producer: AIOKafkaProducer) -> int:
        # Metadata is refreshed by the client; the count is read per request so a topic
        # that grew partitions is used at once (keys then move, as with any producer).
        partitions = producer.client.cluster.partitions_for_topic(self._topic)
        if not partitions:
            partitions = await producer.partitions_for(self._topic)
        return len(partitions)

    async def ready(self) -> bool:
        try:
            producer = await self._ensure()
            async with asyncio.timeout(2):
                await producer.client.force_metadata_update()
            return bool(producer.client.cluster.brokers())
        except (BrokerUnavailable, KafkaError, TimeoutError):
            return False

    @staticmethod
    def _unavailable() -> BrokerUnavailable:
        return BrokerUnavailable(
            "the event broker did not acknowledge the events; retry the request"
            " (events that did get through are deduplicated by their messageId: send one)",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


# Kafka's murmur2 (the Java client's and aiokafka's default partitioner; the seed is
# theirs): native code, a twentieth of aiokafka's pure-Python murmur2, with equal results
# (tests/ingest/test_wire.py holds them to each other).
_MURMUR2_SEED = 0x9747B28C


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``: Kafka's default (murmur2) choice."""
    return (murmurhash2(key, _MURMUR2_SEED) & 0x7FFFFFFF) % partitions


def partitions_for(keys: Sequence[bytes], partitions: int) -> list[int]:
    """:func:`partition_for` of each key. Not remembered per key: a dict of the keys seen
    answered sooner alone, but made the batch check slower (in process, on the bench's
    bodies: 318 against 280 µs a request)."""
    return [partition_for(key, partitions) for key in keys]
