"""The pipeline's COPY of events, written in PostgreSQL's binary format by the application
(app.timeline.writes): every column reads back as the touchpoint had it, whether its own
fields were encoded when it is stored or ahead, in a decode worker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.service import SourceInfo
from app.config import Settings
from app.db import create_pool
from app.identity.identifiers import IdentityConfig
from app.ingest import envelope
from app.pipeline import opener
from app.timeline.writes import insert_events, own_fields
from app.touchpoint import Touchpoint, new_event_id
from tests.factories import touchpoint

ROME = timezone(timedelta(hours=1))


def _rich(source_id: uuid.UUID) -> Touchpoint:
    tp = touchpoint(
        source_id,
        user_id="ada",
        event="Ordine Completato ✓",
        channel="in_store",
        at=datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=ROME),  # before PostgreSQL's epoch
        properties={"total": 19.99, "items": [{"sku": "ß-1", "qty": 2}], "gift": None, "n": 2**62},
        traits={"email": "ada@example.com"},
    )
    tp.sent_at = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    tp.context = {"ip": "203.0.113.9", "page": {"title": "Negozio ☕"}}
    tp.flags = ["invalid_phone"]
    return tp


def _bare(source_id: uuid.UUID) -> Touchpoint:
    return touchpoint(source_id, anonymous_id="anon-1", type="page", event=None, at=1)


@pytest.fixture
async def pool(settings: Settings, db: AsyncEngine) -> AsyncIterator[asyncpg.Pool[Any]]:
    pool = await create_pool(settings, size=1)
    yield pool
    await pool.close()


@pytest.fixture
async def customer(pool: asyncpg.Pool[Any]) -> uuid.UUID:
    """A customer for the events to belong to (events reference their customer)."""
    customer = new_event_id()
    await pool.execute(
        "INSERT INTO customers (id, first_seen_at, last_seen_at) VALUES ($1, now(), now())",
        customer,
    )
    return customer


async def _stored(pool: asyncpg.Pool[Any], event_id: uuid.UUID) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT source_id, message_id, customer_id, type, event, channel, occurred_at, sent_at,"
        " received_at, stage, properties, traits, context, flags FROM events WHERE event_id = $1",
        event_id,
    )
    assert row is not None
    return row


@pytest.mark.parametrize("ahead", [False, True], ids=["encoded when stored", "encoded ahead"])
async def test_every_column_reads_back_as_the_touchpoint_had_it(
    pool: asyncpg.Pool[Any], customer: uuid.UUID, source_id: uuid.UUID, ahead: bool
) -> None:
    rich, bare = _rich(source_id), _bare(source_id)
    encoded = {tp.event_id: own_fields(tp) for tp in (rich, bare)} if ahead else None
    async with pool.acquire() as conn, conn.transaction():
        stages = ["purchase", None]
        await insert_events(conn, [rich, bare], [customer, customer], stages, encoded)
    for tp, stage in ((rich, "purchase"), (bare, None)):
        row = await _stored(pool, tp.event_id)
        assert (row["source_id"], row["message_id"], row["customer_id"]) == (
            source_id, tp.message_id, customer,
        )  # fmt: skip
        assert (row["type"], row["event"], row["channel"]) == (
            tp.type, tp.event, tp.channel.value,
        )  # fmt: skip
        assert row["occurred_at"] == tp.occurred_at  # the same instant, whatever the offset
        assert row["sent_at"] == tp.sent_at
        assert row["received_at"] == tp.received_at
        assert row["stage"] == stage
        for column in ("properties", "traits", "context", "flags"):
            assert orjson.loads(row[column]) == getattr(tp, column)


async def test_flags_passed_by_index_follow_the_touchpoints_own(
    pool: asyncpg.Pool[Any], customer: uuid.UUID, source_id: uuid.UUID
) -> None:
    """Identity resolution's flags are its own, passed beside the touchpoints: stored after
    theirs, on the event at their index, the touchpoints unchanged."""
    rich, bare, other = _rich(source_id), _bare(source_id), _bare(source_id)
    added = {0: ["not_linked:user_id"], 2: ["not_linked:anonymous_id"]}
    async with pool.acquire() as conn, conn.transaction():
        await insert_events(conn, [rich, bare, other], [customer] * 3, [None] * 3, flags=added)
    stored = [
        orjson.loads((await _stored(pool, tp.event_id))["flags"]) for tp in (rich, bare, other)
    ]
    assert stored == [["invalid_phone", "not_linked:user_id"], [], ["not_linked:anonymous_id"]]
    assert (rich.flags, other.flags) == (["invalid_phone"], [])


async def test_an_event_stored_twice_violates_its_key(
    pool: asyncpg.Pool[Any], customer: uuid.UUID, source_id: uuid.UUID
) -> None:
    tp = _bare(source_id)
    async with pool.acquire() as conn:
        await insert_events(conn, [tp], [customer], [None])
        with pytest.raises(asyncpg.UniqueViolationError) as caught:
            await insert_events(conn, [tp], [customer], [None])
    assert caught.value.constraint_name == "pk_events"


def test_a_worker_encodes_what_the_consumer_would_from_the_touchpoints_it_hands_over(
    source_id: uuid.UUID,
) -> None:
    """The worker encodes the touchpoints it built; the consumer stores the ones it decodes
    from the worker's JSON. Both encode to the same bytes, so encoding ahead stores nothing
    different."""
    body = orjson.dumps(
        {
            "batch": [
                {"type": "track", "event": "Añadido", "userId": "u-1", "messageId": "m-1",
                 "timestamp": "2025-03-01T10:00:00+05:30", "properties": {"price": 1e-7}},
                {"type": "page", "anonymousId": "a-1", "messageId": "m-2",
                 "context": {"page": {"title": "☕"}}},
            ],
            "sentAt": "2025-03-01T10:00:01Z",
        }
    )  # fmt: skip
    arrival: Any = {
        "source": SourceInfo(source_id, "web", "web", {}),
        "received_at": datetime.now(UTC),
        "identity": IdentityConfig(),
        "request_context": {"ip": "203.0.113.7"},
    }
    whole = envelope.decode_batch(body)
    assert whole is not None
    admitted = envelope.admitted(body, whole.batch, arrival)
    assert admitted is not None
    values = [value for _, _, value in envelope.seal(*admitted, 1, arrival)]
    [(handed, failed, rows)] = opener._open_all(values)  # type: ignore[misc]
    assert failed == []
    assert rows is not None
    decoded = opener._TOUCHPOINTS.decode(handed)
    assert [own_fields(tp) for tp in decoded] == rows
    assert len(rows) == 2


async def test_many_rows_go_in_chunks_and_a_row_that_cannot_be_encoded_aborts_the_copy(
    pool: asyncpg.Pool[Any], customer: uuid.UUID, source_id: uuid.UUID
) -> None:
    many = [touchpoint(source_id, anonymous_id="anon", at=i) for i in range(2_500)]
    broken = touchpoint(source_id, anonymous_id="anon", event="lone \ud800 surrogate")
    async with pool.acquire() as conn:
        with pytest.raises(UnicodeEncodeError):
            async with conn.transaction():
                await insert_events(conn, [*many, broken], [customer] * 2_501, [None] * 2_501)
        assert await conn.fetchval("SELECT count(*) FROM events") == 0  # all or nothing
        async with conn.transaction():
            await insert_events(conn, many, [customer] * 2_500, ["awareness"] * 2_500)
    stored = await pool.fetchval("SELECT count(*) FROM events WHERE stage = 'awareness'")
    assert stored == 2_500
