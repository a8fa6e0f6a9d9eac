"""Publishing touchpoints to Kafka.

Guarantee: :meth:`Publisher.publish` returns only after the broker acknowledged every
message with ``acks=all``; otherwise it raises :class:`BrokerUnavailable` (the API answers
503 with Retry-After, and the client retries — duplicates die at the pipeline's dedupe key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app.config import Settings
from app.errors import ServiceUnavailable
from app.kit.kafka import create_producer

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class BrokerUnavailable(ServiceUnavailable):
    type = "broker-unavailable"
    title = "The event broker is unavailable"


class Publisher:
    """Owns the API's producer. Starts lazily so the API can come up before the broker."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.kafka_topic
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        try:
            await self._ensure()
        except BrokerUnavailable:
            log.warning("broker not reachable at start; will retry on the first request")

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
                self._producer = producer
        return self._producer

    async def publish(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Send ``(key, value)`` pairs and wait until the broker acknowledged all of them."""
        producer = await self._ensure()
        try:
            async with asyncio.timeout(self._settings.kafka_publish_timeout_s):
                pending = [
                    await producer.send(self._topic, value, key=key) for key, value in messages
                ]
                await asyncio.gather(*pending)
        except (KafkaError, TimeoutError) as exc:
            log.warning("publish failed: %s", type(exc).__name__)
            raise self._unavailable() from exc

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
            " (events that did get through are deduplicated)",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
