"""Produced batches are compressed (``KAFKA_COMPRESSION_TYPE``): every codec the setting
offers must be installed, accepted by the broker, and read back by a consumer unchanged;
zstd at ``KAFKA_ZSTD_LEVEL``."""

from __future__ import annotations

import asyncio
import typing
import uuid

import pytest
import zstandard
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.record.default_records import DefaultRecordBatch

from app.config import Settings
from app.ingest.publisher import Publisher
from app.kit.kafka import create_producer, ensure_topics

CODECS = typing.get_args(Settings.model_fields["kafka_compression_type"].annotation)


def test_zstd_is_the_default() -> None:
    assert Settings().kafka_compression_type == "zstd"
    assert Settings().kafka_zstd_level == 1
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


@pytest.mark.parametrize("level", [-1, 1, 19])
async def test_zstd_batches_are_compressed_at_the_configured_level(
    monkeypatch: pytest.MonkeyPatch, level: int
) -> None:
    """aiokafka has no level setting: the producer's batch builder must still use ours, with
    a compressor kept for each thread rather than one set up for every batch."""
    levels: list[int] = []
    compressor = zstandard.ZstdCompressor

    def spy(*, level: int) -> zstandard.ZstdCompressor:
        levels.append(level)
        return compressor(level=level)

    monkeypatch.setattr(zstandard, "ZstdCompressor", spy)
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9", kafka_zstd_level=level)
    producer = create_producer(settings)  # not started: building a batch needs no broker
    await producer.stop()
    values = [b'{"event":"Order Completed","n":%d}' % i for i in range(100)]

    def build() -> bytes:
        batch = producer.create_batch()
        for value in values:
            batch.append(key=b"k", value=value, timestamp=None)
        return bytes(batch._build())

    built = [build(), build()]
    assert levels == [level], "one compressor, at the level, for both batches"
    built.append(await asyncio.to_thread(build))
    assert levels == [level, level], "another thread's own"
    # Each reads back as aiokafka's consumers read it: the records' values as appended.
    for data in built:
        assert [r.value for r in DefaultRecordBatch(bytearray(data))] == values
