"""Kafka clients built from settings, and topic administration."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import zstandard
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import NoError, TopicAlreadyExistsError, for_code
from aiokafka.record import default_records

from app.config import SettingMissing, Settings

log = logging.getLogger(__name__)

# The modules whose batch builders compress (aiokafka's compiled one when it is built).
_RECORD_MODULES: list[Any] = [default_records]
with contextlib.suppress(ImportError):
    from aiokafka.record._crecords import default_records as _compiled

    _RECORD_MODULES.append(_compiled)


def bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap_servers:
        raise SettingMissing("PERCORSO_KAFKA_BOOTSTRAP_SERVERS is not set")
    return settings.kafka_bootstrap_servers


def create_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A producer that reports success only once every in-sync replica has the message."""
    use_zstd_level(settings.kafka_zstd_level)
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap(settings),
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        "linger_ms": settings.kafka_linger_ms,
        "compression_type": (
            None if settings.kafka_compression_type == "none" else settings.kafka_compression_type
        ),
        "request_timeout_ms": int(settings.kafka_publish_timeout_s * 1000),
        "max_request_size": 2 * 1024 * 1024,
        # One produce request carries one batch per partition, and only one request is in
        # flight per broker: 16 KB batches (the default) cap a busy API at a few hundred
        # events per round trip; a batch envelope alone is tens of KB. Just under brokers'
        # 1 MB default message.max.bytes (bench, /v1/batch: +8 % events/s over 256 KB).
        "max_batch_size": 960 * 1024,
        "client_id": "percorso",
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def use_zstd_level(level: int) -> None:
    """Compress produced zstd batches at ``level``, for every producer of the process.

    aiokafka offers no level (the Java client has ``compression.zstd.level``) and compresses
    at zstd's default, 3. Its record batch builders, compiled and pure Python, call
    ``zstd_encode`` by its module-level name, so the level goes in there. A consumer reads
    any level: a frame does not depend on the level that wrote it.

    Each thread keeps one compressor, which aiokafka's (cramjam's) sets up anew for every
    batch: an API's batches are small (a partition's fills only while the produce request
    before is on its way), and setting up cost 8 µs of a 2 KB batch's 15, 10 of a 10 KB
    one's 24. The frames are the same."""

    chosen = level
    local = threading.local()  # a compressor serves one thread at a time

    def encode(payload: Any, level: int | None = None) -> bytes:  # aiokafka's signature
        compressor = getattr(local, "compressor", None)
        if compressor is None:
            compressor = local.compressor = zstandard.ZstdCompressor(level=chosen)
        return compressor.compress(payload)

    for module in _RECORD_MODULES:
        module.zstd_encode = encode


async def ensure_topics(settings: Settings) -> None:
    """Create the touchpoints and dead-letter topics if they do not exist (idempotent).

    Raises :class:`RuntimeError` when the broker refuses one (too few brokers for the
    replication factor, a policy): the API would otherwise publish to a topic the broker
    creates on first use with its own defaults, or to none."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(settings), client_id="percorso-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                settings.kafka_topic, settings.kafka_partitions, settings.kafka_replication_factor
            ),
            NewTopic(settings.kafka_dead_letter_topic, 1, settings.kafka_replication_factor),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            # The answer carries an error code per topic; aiokafka raises none of them.
            response = await admin.create_topics(missing)
            refused = [
                # (topic, code) in CreateTopics v0, (topic, code, message) since.
                " ".join([f"{name}:", for_code(code).__name__, *filter(None, detail)])
                for name, code, *detail in response.topic_errors
                # Another process may have created one between list and create.
                if code not in (NoError.errno, TopicAlreadyExistsError.errno)
            ]
            if refused:
                raise RuntimeError(f"the broker refused to create topics: {'; '.join(refused)}")
            log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()
