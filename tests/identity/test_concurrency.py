"""Three consumers at once, each storing its batches in parts side by side, build the same
identity graph as processing the events one by one, and the same journeys as a recompute
from the stored timelines, without deadlocks, losing or duplicating nothing."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import create_pool
from app.identity import service as identity_service
from app.identity.policy import MergePolicy, ReferenceGraph
from app.journey.history import recompute
from app.journey.model import load_model
from app.kit.kafka import create_producer, ensure_topics
from app.pipeline import handler as handler_module
from app.pipeline.handler import BatchHandler, Record
from app.pipeline.runner import Pipeline
from app.touchpoint import Identifier
from tests.factories import touchpoint
from tests.helpers import scalar, wait_until

pytestmark = pytest.mark.pipeline

Ident = tuple[str, str]


def _stream(seed: int, people: int, events: int) -> list[list[Ident]]:
    """Overlapping identifiers: several devices per person, shared family devices,
    logins, emails reused across CRM records, phones."""
    rng = random.Random(seed)
    devices = {p: [f"dev-{p}-{d}" for d in range(rng.randint(1, 3))] for p in range(people)}
    shared = [f"shared-{s}" for s in range(people // 10)]
    stream = []
    for _ in range(events):
        p = rng.randrange(people)
        device = rng.choice(shared) if rng.random() < 0.15 else rng.choice(devices[p])
        ids: list[Ident] = [("anonymous_id", device)]
        roll = rng.random()
        if roll < 0.35:
            ids.append(("user_id", f"user-{p}"))
        if roll < 0.15:
            ids.append(("email", f"p{p}@example.com"))
        if roll > 0.9:
            # A CRM-style record: email and phone, without the device.
            ids = [("email", f"p{p}@example.com"), ("phone", f"+3933300{p:05d}")]
            if rng.random() < 0.3:
                ids.append(("crm_id", f"crm-{p}"))
        stream.append(ids)
    return stream


# Events that move customers through the default journey, forwards and back.
_EVENTS = ("Product Viewed", "Newsletter Subscribed", "Order Completed", "Review Submitted")


def _partition(groups: dict[object, set[Ident]]) -> set[frozenset[Ident]]:
    return {frozenset(g) for g in groups.values() if g}


async def test_three_consumers_in_parallel_equal_one_by_one_processing(
    settings: Settings, db: AsyncEngine, source_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler_module, "SPLIT_MIN", 10)  # batches here are up to 40
    topic, group = f"conc-{uuid.uuid4().hex[:8]}", f"conc-{uuid.uuid4().hex[:8]}"
    isolated = settings.model_copy(
        update={
            "kafka_topic": topic,
            "kafka_dead_letter_topic": f"{topic}-dlq",
            "kafka_consumer_group": group,
            "kafka_partitions": 3,
            "pipeline_max_batch": 40,
            "pipeline_run_events": 40,
            "pipeline_batch_parts": 2,
        }
    )
    await ensure_topics(isolated)
    stream = _stream(seed=20261122, people=60, events=1500)
    producer = create_producer(isolated)
    await producer.start()
    try:
        pending = []
        for n, ids in enumerate(stream):
            event = _EVENTS[n % len(_EVENTS)]
            tp = touchpoint(source_id, at=n, message_id=f"c-{n}", extra_ids=ids, event=event)
            # Keyed round-robin, not by person: one person's events reach all three
            # consumers at once, the worst case for races.
            pending.append(await producer.send(topic, tp.to_bytes(), key=str(n).encode()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()

    deadlocks_before = (
        REGISTRY.get_sample_value("percorso_pipeline_retries_total", {"reason": "deadlock"}) or 0.0
    )
    pools = [await create_pool(isolated) for _ in range(3)]
    model = load_model(isolated.journey_model)
    consumers = [Pipeline(isolated, pool, model) for pool in pools]
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:

        async def all_stored() -> bool:
            return (await scalar(db, "SELECT count(*) FROM events")) >= len(stream)

        await wait_until(all_stored, timeout=180, interval=0.25)
    finally:
        for consumer in consumers:
            consumer.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for pool in pools:
            await pool.close()

    assert await scalar(db, "SELECT count(*) FROM events") == len(stream)
    assert await scalar(db, "SELECT sum(event_count) FROM customers") == len(stream)
    assert (
        REGISTRY.get_sample_value("percorso_pipeline_retries_total", {"reason": "deadlock"}) or 0.0
    ) == deadlocks_before

    async with db.connect() as conn:
        identities = (
            await conn.execute(text("SELECT kind, value, customer_id FROM identities"))
        ).all()
        order = (
            (await conn.execute(text("SELECT message_id FROM events ORDER BY seq"))).scalars().all()
        )
    stored: dict[object, set[Ident]] = defaultdict(set)
    for kind, value, customer in identities:
        stored[customer].add((kind, value))

    reference = ReferenceGraph()
    for message_id in order:
        ids = stream[int(message_id.removeprefix("c-"))]
        reference.process([Identifier(kind=k, value=v) for k, v in ids])
    expected = {
        c: {(kind, value) for kind, values in kinds.items() for value in values}
        for c, kinds in reference.customers().items()
    }
    assert _partition(stored) == _partition(expected)
    merges = await scalar(db, "SELECT count(*) FROM merges")
    assert merges > 0, "the stream should have exercised merges"

    # The journeys the three consumers built batch by batch equal journeys recomputed from
    # the whole stored timelines.
    pool = await create_pool(isolated)
    try:
        async with pool.acquire() as conn, conn.transaction():
            # Locked, as recompute requires of its caller.
            before = (await conn.fetch(_JOURNEYS + " FOR UPDATE"), await conn.fetch(_TRANSITIONS))
            await recompute(conn, model, [r["id"] for r in before[0]])
            after = (await conn.fetch(_JOURNEYS), await conn.fetch(_TRANSITIONS))
    finally:
        await pool.close()
    assert [tuple(r) for r in before[0]] == [tuple(r) for r in after[0]]
    assert [tuple(r) for r in before[1]] == [tuple(r) for r in after[1]]


_JOURNEYS = """
    SELECT id, current_stage, furthest_stage, journey_state FROM customers
    WHERE merged_into IS NULL ORDER BY id
"""
_TRANSITIONS = """
    SELECT customer_id, entered_at, event_id, from_stage, to_stage, exited_at
    FROM stage_transitions ORDER BY customer_id, entered_at, event_id
"""


async def test_a_batch_that_keeps_losing_to_other_consumers_runs_alone(
    settings: Settings, db: AsyncEngine, source_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several consumers, a large batch nearly always meets another one's merge, and
    retried on equal terms could lose every attempt. From ALONE_FROM_ATTEMPT its transaction
    holds the writers' lock exclusively: the other consumers' transactions wait, and it
    lands."""
    pool = await create_pool(settings, size=4)
    model = load_model(settings.journey_model)
    losing, other = (BatchHandler(pool, model, MergePolicy(), parts=1) for _ in range(2))
    real_resolve = identity_service.resolve
    attempts = 0
    running_alone, go_on = asyncio.Event(), asyncio.Event()

    async def contended(conn: Any, touchpoints: Any, *args: Any) -> Any:
        nonlocal attempts
        if touchpoints[0].user_id == "loser":
            attempts += 1
            if attempts < handler_module.ALONE_FROM_ATTEMPT:
                raise identity_service.StaleRead("another consumer merged one of these")
            running_alone.set()
            await go_on.wait()
        return await real_resolve(conn, touchpoints, *args)

    monkeypatch.setattr(identity_service, "resolve", contended)

    def records(user: str) -> list[Record]:
        tp = touchpoint(source_id, user_id=user, message_id=f"m-{user}")
        return [Record("t", 0, 0, None, tp.to_bytes())]

    async def other_waits_for_the_writers_lock() -> bool:
        waiting = await scalar(
            db,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
        )
        return bool(waiting)

    try:
        first = asyncio.create_task(losing.handle(records("loser")))
        await asyncio.wait_for(running_alone.wait(), 30)
        second = asyncio.create_task(other.handle(records("other")))
        await wait_until(other_waits_for_the_writers_lock)
        assert not second.done()
        go_on.set()
        assert (await first).stored == 1
        assert (await second).stored == 1
    finally:
        go_on.set()
        await pool.close()
    assert attempts == handler_module.ALONE_FROM_ATTEMPT
    assert await scalar(db, "SELECT count(*) FROM events") == 2
