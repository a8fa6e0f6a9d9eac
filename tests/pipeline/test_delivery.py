"""Delivery guarantees: duplicates die at (source, message id); a consumer killed mid-stream
loses and duplicates nothing; poison messages are dead-lettered and the stream goes on, each
stored and published once however often it is delivered."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.service import create_source
from app.config import Settings
from app.db import create_pool, create_session_factory
from app.identity.policy import MergePolicy
from app.journey.model import load_model
from app.kit.kafka import create_producer, ensure_topics
from app.kit.metrics import PIPELINE_EVENTS, PIPELINE_RETRIES
from app.pipeline import handler as handler_module
from app.pipeline.handler import BatchHandler, Record
from app.pipeline.runner import Pipeline
from app.timeline.writes import Stored, stored_or_suppressed
from tests.factories import touchpoint
from tests.helpers import basic, scalar, wait_until

pytestmark = pytest.mark.pipeline


async def _source_id(engine: AsyncEngine, name: str = "till") -> uuid.UUID:
    async with create_session_factory(engine)() as session:
        source, _ = await create_source(session, name=name, channel="in_store")
        await session.commit()
    return uuid.UUID(str(source.id))


async def test_the_same_batch_sent_twice_is_stored_once(
    app_client: httpx.AsyncClient, write_key: str, db: AsyncEngine, pipeline: Pipeline
) -> None:
    batch = {
        "batch": [
            {
                "type": "track",
                "userId": f"u{i % 3}",
                "event": "Product Viewed",
                "messageId": f"m-{i}",
            }
            for i in range(30)
        ]
    }
    for _ in range(2):
        response = await app_client.post("/v1/batch", json=batch, headers=basic(write_key))
        assert response.status_code == 200
        assert response.json()["accepted"] == 30
    sentinel = {"userId": "sentinel", "event": "Done", "messageId": "sentinel"}
    assert (
        await app_client.post("/v1/track", json=sentinel, headers=basic(write_key))
    ).status_code == 200

    async def sentinel_stored() -> bool:
        return bool(await scalar(db, "SELECT count(*) FROM events WHERE message_id = 'sentinel'"))

    await wait_until(sentinel_stored)
    assert await scalar(db, "SELECT count(*) FROM events") == 31
    # Profiles count each event once, too.
    assert await scalar(db, "SELECT sum(event_count) FROM customers") == 31


def _consumer_env(settings: Settings, topic: str, group: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PERCORSO_DATABASE_URL=settings.database_url or "",
        PERCORSO_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers or "",
        PERCORSO_KAFKA_TOPIC=topic,
        PERCORSO_KAFKA_DEAD_LETTER_TOPIC=f"{topic}-dlq",
        PERCORSO_KAFKA_CONSUMER_GROUP=group,
        PERCORSO_KAFKA_SESSION_TIMEOUT_MS="6000",
        PERCORSO_KAFKA_HEARTBEAT_INTERVAL_MS="1000",
        PERCORSO_PIPELINE_MAX_BATCH="250",
        PERCORSO_PIPELINE_RUN_EVENTS="250",
    )
    return env


async def test_a_consumer_killed_mid_stream_and_restarted_stores_every_event_exactly_once(
    settings: Settings, db: AsyncEngine, tmp_path: Path
) -> None:
    topic, group = f"kill-{uuid.uuid4().hex[:8]}", f"kill-{uuid.uuid4().hex[:8]}"
    isolated = settings.model_copy(
        update={"kafka_topic": topic, "kafka_dead_letter_topic": f"{topic}-dlq"}
    )
    await ensure_topics(isolated)
    source_id = await _source_id(db)
    total = 6_000
    producer = create_producer(isolated)
    await producer.start()
    try:
        pending = []
        for i in range(total):
            tp = touchpoint(source_id, user_id=f"c{i % 200}", at=i, message_id=f"k-{i}")
            pending.append(await producer.send(topic, tp.to_bytes(), key=f"c{i % 200}".encode()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()

    env = _consumer_env(settings, topic, group)
    command = [sys.executable, "-m", "app.cli", "consume"]
    first = _started(command, env, tmp_path / "consumer.log")
    try:

        async def some_stored() -> bool:
            return (await scalar(db, "SELECT count(*) FROM events")) >= 500

        await wait_until(some_stored, timeout=60, interval=0.02, log=tmp_path / "consumer.log")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    stored_at_kill = await scalar(db, "SELECT count(*) FROM events")
    assert stored_at_kill < total, "the consumer finished before it could be killed; raise `total`"

    second = _started(command, env, tmp_path / "consumer.log")
    try:

        async def all_stored() -> bool:
            return (await scalar(db, "SELECT count(*) FROM events")) >= total

        await wait_until(all_stored, timeout=120, log=tmp_path / "consumer.log")
        await asyncio.sleep(1)  # anything redelivered after this point would show up as extra rows
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert await scalar(db, "SELECT count(*) FROM events") == total
    assert await scalar(db, "SELECT count(DISTINCT message_id) FROM events") == total
    assert await scalar(db, "SELECT sum(event_count) FROM customers") == total
    assert await scalar(db, "SELECT count(*) FROM customers") == 200


def _started(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The command running, its stderr appended to ``log`` (the child keeps its own copy of
    the descriptor)."""
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stderr=out)


async def test_an_undecodable_message_is_dead_lettered_and_the_events_after_it_are_stored(
    settings: Settings, db: AsyncEngine, pipeline: Pipeline
) -> None:
    source_id = await _source_id(db)
    producer = create_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.kafka_topic, b"\x00not json at all", key=b"poison")
        await producer.send_and_wait(settings.kafka_topic, b'{"schema_version": 1}', key=b"poison")
        # A NUL character is valid JSON but PostgreSQL refuses it in jsonb: poison found by the DB.
        nul = touchpoint(
            source_id, user_id="poison", properties={"note": "a\u0000b"}, message_id="nul"
        )
        await producer.send_and_wait(settings.kafka_topic, nul.to_bytes(), key=b"poison")
        after = [
            touchpoint(source_id, user_id="poison", at=i, message_id=f"after-{i}") for i in range(5)
        ]
        for tp in after:
            await producer.send_and_wait(settings.kafka_topic, tp.to_bytes(), key=b"poison")
    finally:
        await producer.stop()

    async def after_stored() -> bool:
        return (
            await scalar(db, "SELECT count(*) FROM events WHERE message_id LIKE 'after-%'")
        ) == 5

    await wait_until(after_stored)
    assert await scalar(db, "SELECT count(*) FROM dead_letters") == 3
    reasons = await scalar(db, "SELECT string_agg(reason, ' | ' ORDER BY id) FROM dead_letters")
    assert "undecodable touchpoint" in reasons
    assert "refused by the database" in reasons
    assert await scalar(db, "SELECT count(*) FROM events WHERE message_id = 'nul'") == 0

    consumer = AIOKafkaConsumer(
        settings.kafka_dead_letter_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"dlq-check-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        seen: list[bytes] = []

        async def three_on_topic() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            seen.extend(m.value for msgs in batch.values() for m in msgs)
            return len(seen) >= 3

        await wait_until(three_on_topic)
        assert b"\x00not json at all" in seen
    finally:
        await consumer.stop()


async def test_events_stored_by_another_consumer_after_the_dedupe_read_are_retried_not_lost(
    handle: Any,
    db: AsyncEngine,
    source_id: uuid.UUID,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A redelivered batch can race the consumer that first stored it: the dedupe read
    misses its events, the COPY hits the unique key, and the batch is retried (the dedupe
    then drops them) instead of being dead-lettered as refused."""
    first = [touchpoint(source_id, user_id="u1", message_id=f"m-{i}", at=i) for i in range(3)]
    assert (await handle(first)).stored == 3

    misses = [True]

    async def miss_once(conn: Any, keys: Any, identifiers: Any = None) -> Stored:
        found = await stored_or_suppressed(conn, keys, identifiers)
        if misses.pop() if misses else False:
            found.keys.clear()  # as if the other consumer committed just after this read
        return found

    monkeypatch.setattr(handler_module, "stored_or_suppressed", miss_once)
    retries = PIPELINE_RETRIES.labels("stale_read")
    before = retries._value.get()
    later = [touchpoint(source_id, user_id="u1", message_id="m-3", at=3)]
    with caplog.at_level(logging.INFO, logger=handler_module.__name__):
        outcome = await handle(first + later)
    assert (outcome.stored, outcome.duplicates, outcome.dead_letters) == (1, 3, [])
    assert retries._value.get() == before + 1
    # The log says why, for how many events.
    assert [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()] == [
        "retrying 4 events after StaleRead (events were stored concurrently; attempt 1)"
    ]
    assert await scalar(db, "SELECT count(*) FROM events") == 4
    assert await scalar(db, "SELECT count(*) FROM dead_letters") == 0
    assert await scalar(db, "SELECT sum(event_count) FROM customers") == 4


async def test_a_message_too_long_for_an_index_is_dead_lettered_and_the_others_stored(
    handle: Any, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    """PostgreSQL cannot index a key of more than about 2.7 KB (its program limit, not a
    data error): such a message id or identifier is isolated and dead-lettered like any
    other message the database refuses, and the batch goes on."""
    long = secrets.token_hex(2000)
    outcome = await handle(
        [
            touchpoint(source_id, user_id="ada", at=0, message_id="before"),
            touchpoint(source_id, user_id="ada", at=1, message_id=long),
            touchpoint(source_id, user_id=long, at=2, message_id="long-identifier"),
            touchpoint(source_id, user_id="ada", at=3, message_id="after"),
        ]
    )
    assert outcome.stored == 2
    assert [d.offset for d in outcome.dead_letters] == [1, 2]
    assert await scalar(db, "SELECT string_agg(message_id, ' ' ORDER BY seq) FROM events") == (
        "before after"
    )
    reasons = await scalar(db, "SELECT string_agg(reason, ' | ' ORDER BY id) FROM dead_letters")
    assert reasons.count("refused by the database: index row size") == 2
    assert '"uq_events_source_id_message_id"' in reasons
    assert '"pk_identities"' in reasons
    assert await scalar(db, "SELECT event_count FROM customers") == 2


async def test_a_touchpoint_the_api_never_publishes_is_dead_lettered_and_the_others_stored(
    settings: Settings, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    """Another producer's touchpoint with a time without a UTC offset (which cannot be
    ordered with the others), an integer beyond 64 bits or nesting deeper than 254 levels
    (which cannot be written for the database) is a dead letter, and the batch goes on."""

    def holding(message_id: str, value: bytes) -> bytes:
        tp = touchpoint(source_id, user_id="ada", message_id=message_id, properties={"v": 0})
        return tp.to_bytes().replace(b'"v":0', b'"v":' + value)

    naive = datetime(2026, 11, 1, 10, 0)  # no offset
    values = [
        touchpoint(source_id, user_id="ada", message_id="before").to_bytes(),
        touchpoint(source_id, user_id="ada", message_id="naive", at=naive).to_bytes(),
        holding("large", b"18446744073709551616"),
        holding("deep", b'{"a":' * 300 + b"1" + b"}" * 300),
        touchpoint(source_id, user_id="ada", message_id="after", at=1).to_bytes(),
    ]
    pool = await create_pool(settings)
    handler = BatchHandler(pool, load_model(settings.journey_model), MergePolicy())
    try:
        outcome = await handler.handle(
            [Record(settings.kafka_topic, 0, offset, None, v) for offset, v in enumerate(values)]
        )
    finally:
        await pool.close()
    assert outcome.stored == 2
    assert [(d.offset, d.reason) for d in outcome.dead_letters] == [
        (
            1,
            "undecodable touchpoint: Expected `datetime` with a timezone component"
            " - at `$.occurred_at`",
        ),
        (2, "unstorable touchpoint: Integer exceeds 64-bit range"),
        (3, "unstorable touchpoint: Recursion limit reached"),
    ]
    assert await scalar(db, "SELECT count(*) FROM dead_letters") == 3
    assert await scalar(db, "SELECT string_agg(message_id, ' ' ORDER BY seq) FROM events") == (
        "before after"
    )


async def test_a_batch_redelivered_to_another_consumer_stores_and_publishes_its_dead_letters_once(
    settings: Settings, db: AsyncEngine
) -> None:
    """A new owner of the partitions re-reads a batch already stored (its offsets were not
    committed: a rebalance, or a crash after the database commit): the events are
    duplicates, and so are its dead letters, neither stored nor published again."""
    topic = f"again-{uuid.uuid4().hex[:8]}"
    isolated = settings.model_copy(
        update={"kafka_topic": topic, "kafka_dead_letter_topic": f"{topic}-dlq"}
    )
    await ensure_topics(isolated)
    source_id = await _source_id(db)
    nul = touchpoint(source_id, user_id="ada", properties={"note": "a\u0000b"}, message_id="nul")
    values = [
        b"\x00not json at all",
        nul.to_bytes(),
        touchpoint(source_id, user_id="ada", message_id="good").to_bytes(),
    ]
    producer = create_producer(isolated)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()

    pool = await create_pool(isolated)
    try:
        # The second consumer group stands for the new owner: no offsets committed for it.
        for group in (f"{topic}-first", f"{topic}-again"):
            grouped = isolated.model_copy(update={"kafka_consumer_group": group})
            await _consume_until_committed(grouped, pool, len(values))
    finally:
        await pool.close()

    assert await scalar(db, "SELECT count(*) FROM events") == 1
    assert await scalar(db, "SELECT count(*) FROM dead_letters") == 2
    assert await scalar(db, "SELECT count(*) FROM dead_letters WHERE published_at IS NOT NULL") == 2
    # Both consumers have committed: whatever either published is on the topic by now.
    assert sorted(await _all_of(isolated, isolated.kafka_dead_letter_topic)) == sorted(values[:2])


async def test_a_record_without_a_value_is_dead_lettered_and_the_events_after_it_are_stored(
    settings: Settings, db: AsyncEngine
) -> None:
    """A tombstone (or any record another tool produces with a null value) is a dead letter
    like any other poison: the consumer goes on past it."""
    topic = f"tombstone-{uuid.uuid4().hex[:8]}"
    isolated = settings.model_copy(
        update={
            "kafka_topic": topic,
            "kafka_dead_letter_topic": f"{topic}-dlq",
            "kafka_consumer_group": topic,
        }
    )
    await ensure_topics(isolated)
    source_id = await _source_id(db)
    producer = create_producer(isolated)
    await producer.start()
    try:
        await producer.send_and_wait(topic, None, key=b"tombstone", partition=0)
        for i in range(3):
            tp = touchpoint(source_id, user_id="ada", at=i, message_id=f"after-{i}")
            await producer.send_and_wait(topic, tp.to_bytes(), key=b"ada", partition=0)
    finally:
        await producer.stop()

    pool = await create_pool(isolated)
    try:
        await _consume_until_committed(isolated, pool, 4)
    finally:
        await pool.close()

    assert await scalar(db, "SELECT count(*) FROM events") == 3
    assert await scalar(db, "SELECT count(*) FROM dead_letters") == 1
    assert await scalar(db, "SELECT reason FROM dead_letters") == "record has no value"
    assert await scalar(db, "SELECT key FROM dead_letters") == b"tombstone"
    assert await _all_of(isolated, isolated.kafka_dead_letter_topic) == [b""]


async def _consume_until_committed(
    settings: Settings, pool: asyncpg.Pool[Any], offset: int
) -> None:
    """Run a consumer until it has committed ``offset`` on partition 0 of its topic (or has
    stopped: its error is raised)."""
    consumer = Pipeline(settings, pool, load_model(settings.journey_model))
    committed: list[int | None] = []
    commit = consumer._consumer.commit

    async def recorded(offsets: dict[TopicPartition, int]) -> None:
        await commit(offsets)
        committed.append(offsets.get(TopicPartition(settings.kafka_topic, 0)))

    async def done() -> bool:
        return offset in committed or running.done()

    consumer._consumer.commit = recorded  # type: ignore[method-assign]
    running = asyncio.create_task(consumer.run())
    try:
        await wait_until(done)
    finally:
        consumer.stop()
        await asyncio.wait_for(running, 30)


async def _all_of(settings: Settings, topic: str) -> list[bytes]:
    """Every message on partition 0 of ``topic`` now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        seen: list[bytes] = []
        while await consumer.position(partition) < end:
            batch = await consumer.getmany(partition, timeout_ms=500)
            seen += [m.value for m in batch.get(partition, [])]
        return seen
    finally:
        await consumer.stop()


async def test_a_split_batch_redelivered_after_one_part_failed_stores_its_dead_letters_once(
    settings: Settings, db: AsyncEngine, source_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first part of a split run records the run's dead letters and commits; another
    part fails, so the batch is not acknowledged, and its letters were never published.
    The redelivery stores them no second time, and names them for the dead-letter topic."""
    monkeypatch.setattr(handler_module, "SPLIT_MIN", 2)
    pool = await create_pool(settings)
    handler = BatchHandler(pool, load_model(settings.journey_model), MergePolicy(), parts=2)
    # ada's two events are the larger part, the first (which records the letters); bob's
    # the second.
    events = [
        touchpoint(source_id, user_id="ada", at=0),
        touchpoint(source_id, user_id="ada", at=1),
        touchpoint(source_id, user_id="bob", at=2),
    ]
    values = [b"\x00not json", *(tp.to_bytes() for tp in events), b"{}"]
    records = [Record("touchpoints", 1, offset, None, v) for offset, v in enumerate(values)]
    insert_events = handler_module.insert_events

    async def failing_for_bob(conn: Any, touchpoints: Any, *rest: Any) -> None:
        if any(tp.user_id == "bob" for tp in touchpoints):
            raise RuntimeError("bob's part fails")
        await insert_events(conn, touchpoints, *rest)

    counters = [PIPELINE_EVENTS.labels(o) for o in ("stored", "duplicate", "dead_letter")]
    before = [c._value.get() for c in counters]
    try:
        monkeypatch.setattr(handler_module, "insert_events", failing_for_bob)
        with pytest.raises(RuntimeError, match="bob's part fails"):
            await handler.handle(records)
        assert await scalar(db, "SELECT count(*) FROM dead_letters") == 2
        monkeypatch.setattr(handler_module, "insert_events", insert_events)
        again = await handler.handle(records)
    finally:
        await pool.close()
    assert (again.stored, again.duplicates) == (1, 2)
    assert sorted(d.offset for d in again.dead_letters) == [0, 4]
    assert await scalar(db, "SELECT count(*) FROM dead_letters") == 2
    assert await scalar(db, "SELECT count(*) FROM events") == 3
    # Counted as each part committed: ada's two events are stored once, then duplicates;
    # the letters, never published, are named (and counted) again by the redelivery.
    assert [c._value.get() - b for c, b in zip(counters, before, strict=True)] == [3, 2, 4]
