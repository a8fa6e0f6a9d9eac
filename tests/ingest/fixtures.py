"""Fixtures for the channel tests (tracking, email, imports): sources with settings, a
reader of the touchpoints topic, and the real app served by uvicorn for the SDK tests.

Tests that check what reaches the broker (``client`` + ``topic``) publish to a topic of
their own (``channel_settings``): the session's pipeline never sees those events, so it is
not left writing to tables that the next test truncates. Tests that need the timeline use
``app_client``/``http_base_url`` and the ``pipeline`` fixture on the real topic.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.service import SourceInfo, create_source
from app.config import Settings
from app.db import create_session_factory
from app.identity.identifiers import IdentityConfig
from app.ingest import envelope
from app.kit.kafka import ensure_topics
from app.main import create_app
from app.touchpoint import Touchpoint
from tests.helpers import serving

SourceFactory = Callable[..., Awaitable[tuple[SourceInfo, str]]]


@pytest.fixture
async def make_source(db: AsyncEngine) -> SourceFactory:
    """``await make_source(channel="email", settings={...})`` → (source, write key)."""

    async def make(
        *, channel: str = "web", settings: dict[str, Any] | None = None, name: str | None = None
    ) -> tuple[SourceInfo, str]:
        async with create_session_factory(db)() as session:
            made = await create_source(
                session,
                name=name or f"src-{uuid.uuid4().hex[:8]}",
                channel=channel,
                settings=settings,
            )
            await session.commit()
        return made

    return make


class TopicReader:
    """Reads the touchpoints topic from where it stood when the test began (no consumer
    group: the pipeline's offsets are untouched)."""

    def __init__(self, consumer: AIOKafkaConsumer, identity: IdentityConfig) -> None:
        self._consumer = consumer
        self._identity = identity
        self.seen: list[Touchpoint] = []
        self.envelopes: list[bytes] = []  # the batch envelopes read, as sent

    async def touchpoints(
        self, source_id: uuid.UUID, count: int, timeout: float = 20.0
    ) -> list[Touchpoint]:
        """Exactly the first ``count`` touchpoints of ``source_id``; fails on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            mine = [tp for tp in self.seen if tp.source_id == source_id]
            if len(mine) >= count:
                return mine[:count]
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(mine)} of {count} touchpoints arrived")
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    self.seen.extend(self._decode(r.value))

    def _decode(self, value: bytes) -> list[Touchpoint]:
        """As the pipeline reads a message: a touchpoint, or a batch envelope's."""
        if not envelope.is_envelope(value):
            return [Touchpoint.from_bytes(value)]
        built, failed = envelope.open_envelope(value, self._identity)
        assert not failed, failed
        self.envelopes.append(value)
        return built


@pytest.fixture(scope="session")
async def channel_settings(settings: Settings, engine: AsyncEngine) -> Settings:
    """The session's settings with a touchpoints topic no pipeline consumes."""
    own = settings.model_copy(update={"kafka_topic": f"{settings.kafka_topic}-channels"})
    await ensure_topics(own)
    return own


@pytest.fixture
async def client(channel_settings: Settings, db: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The API over ASGI, publishing to the ``channel_settings`` topic."""
    async with asgi_client(channel_settings) as http:
        yield http


@asynccontextmanager
async def asgi_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app made with ``settings``, over ASGI, its lifespan running."""
    async with serving(create_app(settings)) as http:
        yield http


@pytest.fixture
async def topic(channel_settings: Settings) -> AsyncIterator[TopicReader]:
    settings = channel_settings
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.kafka_topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(settings.kafka_topic) or set()
        assigned = [TopicPartition(settings.kafka_topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        for tp in assigned:  # resolve positions now, before the test publishes
            await consumer.position(tp)
        yield TopicReader(consumer, settings.identity_config())
    finally:
        await consumer.stop()


@pytest.fixture
def http_base_url(settings: Settings, db: AsyncEngine) -> Iterator[str]:
    """The real app under uvicorn, in a thread with its own loop, on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), lifespan="on", log_level="warning", loop="asyncio", http="h11"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started:
            break
        threading.Event().wait(0.05)
    else:
        raise RuntimeError("uvicorn did not start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)
    sock.close()
