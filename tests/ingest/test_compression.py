"""Produced batches are compressed (``KAFKA_COMPRESSION_TYPE``): every codec the setting
offers must be installed, accepted by the broker, and read back by a consumer unchanged."""

from __future__ import annotations

import typing
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.config import Settings
from app.ingest.publisher import Publisher
from app.kit.kafka import ensure_topics

CODECS = typing.get_args(Settings.model_fields["kafka_compression_type"].annotation)


def test_zstd_is_the_default() -> None:
    assert Settings().kafka_compression_type == "zstd"
    assert set(CODECS) == {"none", "gzip", "snappy", "lz4", "zstd"}


@pytest.mark.parametrize("codec", CODECS)
async def test_a_published_batch_reads_back_unchanged(settings: Settings, codec: str) -> None:
    topic = f"codec-{codec}-{uuid.uuid4().hex[:8]}"
    isolated = settings.model_copy(
        update={
            "kafka_topic": topic,
            "kafka_dead_letter_topic": f"{topic}-dlq",
            "kafka_compression_type": codec,
        }
    )
    await ensure_topics(isolated)
    # JSON-like values that compress, and one that does not.
    sent = [(f"k{i}".encode(), b'{"event":"Order Completed","n":%d}' % i * 20) for i in range(50)]
    sent.append((b"random", uuid.uuid4().bytes * 64))
    publisher = Publisher(isolated)
    try:
        await publisher.publish(sent)
    finally:
        await publisher.close()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=isolated.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(isolated.kafka_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        received: list[tuple[bytes | None, bytes | None]] = []
        for _ in range(40):
            batch = await consumer.getmany(timeout_ms=250)
            received += [(m.key, m.value) for msgs in batch.values() for m in msgs]
            if len(received) >= len(sent):
                break
    finally:
        await consumer.stop()
    assert sorted(received) == sorted(sent)
