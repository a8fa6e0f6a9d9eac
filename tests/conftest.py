"""Test fixtures: real PostgreSQL with migrations applied, a real Tansu broker.

PostgreSQL: ``PERCORSO_TEST_DATABASE_URL`` or ``PERCORSO_DATABASE_URL`` names a server (a
fresh database is created on it per session and dropped afterwards); otherwise an embedded
server is started. The broker is always an embedded Tansu on a free port, with topics and
consumer groups unique to the session.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.service import create_source, create_token
from app.config import Settings
from app.db import create_engine, create_pool, create_session_factory
from app.identity.policy import MergePolicy
from app.journey.model import load_model
from app.kit import embedded
from app.kit.kafka import ensure_topics
from app.main import create_app
from app.migrate import upgrade
from app.pipeline.handler import BatchHandler, Outcome, Record
from app.pipeline.runner import Pipeline
from app.touchpoint import Touchpoint
from tests.helpers import serving

RUN_ID = secrets.token_hex(4)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    url = os.environ.get("PERCORSO_TEST_DATABASE_URL") or os.environ.get("PERCORSO_DATABASE_URL")
    if url:
        yield url
        return
    # Kept under the data dir (not a 0700 temp dir: the server runs as its own user when
    # the tests run as root) and reused across runs; each session gets a fresh database.
    server = embedded.EmbeddedPostgres.start(Settings().data_dir / "test-postgres")
    yield server.url()
    server.stop()


@pytest.fixture(scope="session")
def database_url(pg_admin_url: str) -> Iterator[str]:
    name = f"percorso_test_{RUN_ID}"
    asyncio.run(embedded.ensure_database(pg_admin_url, name))
    url = embedded.with_database(pg_admin_url, name)
    upgrade(url)
    yield url
    asyncio.run(embedded.drop_database(pg_admin_url, name))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[embedded.EmbeddedBroker]:
    server = embedded.EmbeddedBroker(
        log_file=tmp_path_factory.mktemp("tansu") / "tansu.log"
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(database_url: str, broker: embedded.EmbeddedBroker) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap,
        kafka_topic=f"touchpoints-{RUN_ID}",
        kafka_dead_letter_topic=f"touchpoints-dlq-{RUN_ID}",
        kafka_consumer_group=f"pipeline-{RUN_ID}",
        kafka_partitions=3,
        kafka_session_timeout_ms=6_000,
        kafka_heartbeat_interval_ms=1_000,
        pipeline_poll_timeout_ms=50,
        auth_cache_ttl_s=0,
        db_pool_size=5,
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    await embedded.wait_for_broker(settings.kafka_bootstrap_servers or "")
    await ensure_topics(settings)
    yield engine
    await engine.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncEngine:
    """A clean database (every table emptied except the migration bookkeeping).

    The session's pipeline may still be writing a previous test's stragglers; TRUNCATE can
    deadlock with it, so it is retried."""
    for attempt in range(5):
        try:
            async with engine.begin() as conn:
                tables = (
                    await conn.execute(
                        text(
                            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                            " AND tablename <> 'alembic_version'"
                        )
                    )
                ).scalars()
                await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            return engine
        except DBAPIError as exc:
            if "deadlock" not in str(exc) or attempt == 4:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


@pytest.fixture
async def app_client(settings: Settings, db: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(settings)) as client:
        yield client


@pytest.fixture
async def write_key(db: AsyncEngine) -> str:
    async with create_session_factory(db)() as session:
        _, key = await create_source(session, name="website", channel="web")
        await session.commit()
    return key


@pytest.fixture
async def read_token(db: AsyncEngine) -> str:
    async with create_session_factory(db)() as session:
        _, secret = await create_token(session, scope="read")
        await session.commit()
    return secret


@pytest.fixture
async def admin_token(db: AsyncEngine) -> str:
    async with create_session_factory(db)() as session:
        _, secret = await create_token(session, scope="admin", name="dpo")
        await session.commit()
    return secret


@pytest.fixture(scope="session")
async def pipeline(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Pipeline]:
    """One consumer for the session, running in the test loop."""
    pool = await create_pool(settings)
    consumer = Pipeline(settings, pool, load_model(settings.journey_model))
    task = asyncio.create_task(consumer.run())
    yield consumer
    consumer.stop()
    await asyncio.wait_for(task, 30)
    await pool.close()


@pytest.fixture
async def handle(settings: Settings, db: AsyncEngine) -> AsyncIterator[Any]:
    """Run touchpoints through the pipeline's batch handler directly (no broker): the
    deterministic way to put events in the database."""
    pool = await create_pool(settings)
    policy = MergePolicy.parse(settings.merge_limits, settings.merge_priority)
    handler = BatchHandler(pool, load_model(settings.journey_model), policy)

    async def run(touchpoints: list[Touchpoint]) -> Outcome:
        records = [
            Record(settings.kafka_topic, 0, offset, None, tp.to_bytes())
            for offset, tp in enumerate(touchpoints)
        ]
        return await handler.handle(records)

    yield run
    await pool.close()


@pytest.fixture
async def source_id(db: AsyncEngine) -> uuid.UUID:
    """A source for events built with tests.factories (events reference their source)."""
    async with create_session_factory(db)() as session:
        source, _ = await create_source(session, name="factory", channel="web")
        await session.commit()
    return uuid.UUID(str(source.id))
