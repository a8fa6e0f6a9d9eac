"""The pipeline's side of batch envelopes: it builds their touchpoints, stores them once,
and dead-letters a call it cannot build or store on its own, never the whole envelope.
Each test runs with envelopes opened in the consumer process and in a worker process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.service import SourceInfo
from app.config import Settings
from app.db import create_pool
from app.identity.identifiers import IdentityConfig
from app.identity.policy import MergePolicy
from app.ingest import envelope
from app.journey.model import load_model
from app.pipeline import handler as handler_module
from app.pipeline.handler import BatchHandler, Record
from app.pipeline.opener import EnvelopeOpener
from tests.factories import touchpoint
from tests.helpers import refusing, scalar


@pytest.fixture(scope="module", params=["in process", "in a worker"])
def opener(request: pytest.FixtureRequest) -> Iterator[EnvelopeOpener | None]:
    if request.param == "in process":
        yield None
        return
    worker = EnvelopeOpener(IdentityConfig())
    yield worker
    worker.close()


@pytest.fixture(autouse=True)
def _workers_open_any_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler_module, "_WORKER_MIN_BYTES", 0)


@pytest.fixture
async def handler(
    settings: Settings, db: AsyncEngine, opener: EnvelopeOpener | None
) -> AsyncIterator[BatchHandler]:
    pool = await create_pool(settings)
    model = load_model(settings.journey_model)
    yield BatchHandler(pool, model, MergePolicy(), parts=1, opener=opener)
    await pool.close()


def _sealed(source_id: uuid.UUID, calls: list[dict[str, Any]]) -> bytes:
    (value,) = _sealed_all(source_id, calls)
    return value


def _sealed_all(source_id: uuid.UUID, calls: list[dict[str, Any]]) -> list[bytes]:
    """The envelopes of one request holding ``calls``, all on one partition."""
    whole = envelope.decode_batch(orjson.dumps({"batch": calls}))
    assert whole is not None
    sealed = envelope.seal(
        whole.batch,
        [b"k"] * len(calls),
        1,
        {
            "source": SourceInfo(id=source_id, name="s", channel="web", settings={}),
            "received_at": datetime.now(UTC),
            "identity": IdentityConfig(),
            "request_context": {},
        },
    )
    return [value for _, _, value in sealed]


def _track(message_id: str, user_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": message_id, "userId": user_id, "event": "E", **fields}


async def test_an_envelopes_calls_are_stored_once_and_its_poison_alone_dead_lettered(
    handler: BatchHandler, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    calls = [
        _track("m-1", "ada"),
        # Only another producer seals these two: the API refuses them.
        _track("blocked", "undefined"),
        _track("nul", "ada", properties={"note": "a\u0000b"}),  # jsonb cannot hold it
        _track("poison", "ada"),  # built, then refused by the database (the check below)
        _track("m-2", "bob"),
    ]
    record = Record("touchpoints", 3, 17, b"ada", _sealed(source_id, calls))
    async with refusing(db, "message_id <> 'poison'"):
        outcome = await handler.handle([record])
        again = await handler.handle([record])  # redelivered after a crash
    assert outcome.stored == 2
    assert (again.stored, again.duplicates) == (0, 2)
    letters = await _letters(db)
    assert [(row["reason"].split(":")[0], row["offset"], row["item"]) for row in letters] == [
        ("call not built", 17, 1),
        ("call not built", 17, 2),
        ("refused by the database", 17, 3),
    ]  # once: the redelivered batch has the same poison, each call at its place
    assert "NUL character" in letters[1]["reason"]
    # Each letter holds its own call (as sent, or as built), not the envelope.
    assert orjson.loads(letters[0]["payload"])["messageId"] == "blocked"
    assert orjson.loads(letters[1]["payload"])["messageId"] == "nul"
    assert orjson.loads(letters[2]["payload"])["message_id"] == "poison"
    stored = "SELECT string_agg(message_id, ',' ORDER BY message_id) FROM events"
    assert await scalar(db, stored) == "m-1,m-2"


async def test_the_envelopes_of_one_request_are_stored_as_its_calls_in_order_and_once(
    handler: BatchHandler, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    # 1.2 MB of one person's calls: sealed in three envelopes, one after the other.
    calls = [_track(f"m-{i:03}", "ada", properties={"note": "x" * 4_000}) for i in range(300)]
    calls[-1] = _track("blocked", "undefined")  # only another producer seals it
    values = _sealed_all(source_id, calls)
    assert len(values) == 3
    records = [Record("touchpoints", 0, 40 + i, b"k", value) for i, value in enumerate(values)]
    outcome = await handler.handle(records)
    again = await handler.handle(records)  # redelivered after a crash
    assert outcome.stored == 299
    assert (again.stored, again.duplicates) == (0, 299)
    order = await scalar(db, "SELECT string_agg(message_id, ',' ORDER BY seq) FROM events")
    assert order == ",".join(f"m-{i:03}" for i in range(299))
    (letter,) = await _letters(db)  # once, at its place in its own envelope
    assert (letter["offset"], letter["item"]) == (42, len(orjson.loads(values[2])["items"]) - 1)
    assert orjson.loads(letter["payload"])["messageId"] == "blocked"


async def test_a_redelivered_envelopes_letters_go_to_the_topic_until_published_then_never(
    handler: BatchHandler, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    """Two calls alike to the byte, both refused, are two letters; a redelivery stores
    neither again, and names them for the dead-letter topic only while it has not had them
    (the consumer stopped between the database commit and publishing them)."""
    calls = [_track("twin", "undefined"), _track("m-1", "ada"), _track("twin", "undefined")]
    record = Record("touchpoints", 0, 5, None, _sealed(source_id, calls))
    first = await handler.handle([record])
    unpublished = await handler.handle([record])
    await handler.mark_published(unpublished.dead_letters)
    published = await handler.handle([record])

    assert [d.origin for d in first.dead_letters] == [
        ("touchpoints", 0, 5, 0),
        ("touchpoints", 0, 5, 2),
    ]
    assert unpublished.dead_letters == first.dead_letters
    assert (published.stored, published.duplicates, published.dead_letters) == (0, 1, [])
    letters = await _letters(db)
    assert [(row["item"], row["published_at"] is not None) for row in letters] == [
        (0, True),
        (2, True),
    ]


async def _run_sizes(
    settings: Settings, opener: EnvelopeOpener | None, max_events: int, records: list[Record]
) -> tuple[int, list[int]]:
    """``(events stored, events in each run)`` for one batch handled with `max_events`."""
    pool = await create_pool(settings)
    model = load_model(settings.journey_model)
    small = BatchHandler(pool, model, MergePolicy(), parts=1, max_events=max_events, opener=opener)
    sizes: list[int] = []
    store = small._store

    async def counted(origin: Any, touchpoints: Any, *rest: Any) -> Any:
        sizes.append(len(touchpoints))
        return await store(origin, touchpoints, *rest)

    small._store = counted  # type: ignore[method-assign]
    try:
        outcome = await small.handle(records)
    finally:
        await pool.close()
    return outcome.stored, sizes


def _envelopes(source_id: uuid.UUID, count: int, calls: int) -> list[Record]:
    return [
        Record(
            "touchpoints",
            0,
            i,
            None,
            _sealed(source_id, [_track(f"m-{i}-{j}", "ada") for j in range(calls)]),
        )
        for i in range(count)
    ]


async def test_envelopes_are_stored_in_runs_of_about_max_events(
    settings: Settings, db: AsyncEngine, source_id: uuid.UUID, opener: EnvelopeOpener | None
) -> None:
    stored, sizes = await _run_sizes(settings, opener, 2, _envelopes(source_id, 3, 3))
    assert stored == 9
    assert sizes == [3, 3, 3]  # a run closes once it holds max_events; envelopes stay whole
    assert await scalar(db, "SELECT event_count FROM customers") == 9


async def test_the_first_runs_of_a_batch_are_smaller(
    settings: Settings, db: AsyncEngine, source_id: uuid.UUID, opener: EnvelopeOpener | None
) -> None:
    # A quarter of max_events, then a half, then whole runs: the database starts on the
    # first run while the rest of the batch is decoded.
    stored, sizes = await _run_sizes(settings, opener, 8, _envelopes(source_id, 21, 1))
    assert stored == 21
    assert sizes == [2, 4, 8, 7]
    assert await scalar(db, "SELECT count(*) FROM events") == 21


async def test_an_undecodable_envelope_is_dead_lettered_whole(
    handler: BatchHandler, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    broken = b'{"envelope":"segment-batch","items":"no"}'
    good = Record("touchpoints", 0, 2, None, _sealed(source_id, [_track("m-1", "ada")]))
    outcome = await handler.handle([Record("touchpoints", 0, 1, None, broken), good])
    assert outcome.stored == 1
    (letter,) = await _letters(db)
    assert letter["reason"].startswith("undecodable envelope")
    assert bytes(letter["payload"]) == broken


async def test_an_envelope_received_at_a_time_without_an_offset_is_dead_lettered_whole(
    handler: BatchHandler, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    """The API writes its receive time with an offset; without one (another producer's),
    its calls' times could not be ordered with any other."""
    sealed = orjson.loads(_sealed(source_id, [_track("m-1", "ada")]))
    naive = orjson.dumps({**sealed, "received_at": "2026-11-01T10:00:00"})
    good = Record("touchpoints", 0, 2, None, _sealed(source_id, [_track("m-2", "ada")]))
    outcome = await handler.handle([Record("touchpoints", 0, 1, None, naive), good])
    assert outcome.stored == 1
    (letter,) = await _letters(db)
    assert letter["reason"] == (
        "undecodable envelope: Expected `datetime` with a timezone component - at `$.received_at`"
    )
    assert bytes(letter["payload"]) == naive


async def test_records_are_stored_in_order_however_far_ahead_envelopes_are_opened(
    handler: BatchHandler, db: AsyncEngine, source_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sealed(n: int) -> bytes:
        return _sealed(source_id, [_track(f"e{n}-{j}", "ada") for j in range(2)])

    # Two envelopes handed to a worker at a time, three in flight at most.
    monkeypatch.setattr(handler_module, "_CHUNK_BYTES", 2 * len(sealed(0)) + 2)
    monkeypatch.setattr(handler_module, "_AHEAD_BYTES", 3 * len(sealed(0)))
    values = [sealed(0), sealed(1), sealed(2), b"c1", sealed(3), b"c2", sealed(4), sealed(5)]
    records = []
    for offset, value in enumerate(values):
        if not envelope.is_envelope(value):
            tp = touchpoint(source_id, user_id="ada", message_id=value.decode())
            value = tp.to_bytes()
        records.append(Record("touchpoints", 0, offset, None, value))
    outcome = await handler.handle(records)
    assert outcome.stored == 14
    order = await scalar(db, "SELECT string_agg(message_id, ',' ORDER BY seq) FROM events")
    assert order == "e0-0,e0-1,e1-0,e1-1,e2-0,e2-1,c1,e3-0,e3-1,c2,e4-0,e4-1,e5-0,e5-1"


async def test_a_small_batch_is_opened_in_process_even_with_an_opener(
    settings: Settings, db: AsyncEngine, source_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handing envelopes to a worker pays off for a backlog, not for the few events a
    consumer that keeps up gets at a time: those would wait on the hand-over."""
    monkeypatch.undo()  # the real threshold
    offered: list[list[bytes]] = []

    class Recording(EnvelopeOpener):
        def __init__(self) -> None:
            pass

        async def open_all(self, values: list[bytes]) -> list[Any]:
            offered.append(values)
            raise AssertionError("a small batch went to the worker")

    pool = await create_pool(settings)
    model = load_model(settings.journey_model)
    small = BatchHandler(pool, model, MergePolicy(), parts=1, opener=Recording())
    record = Record("touchpoints", 0, 0, None, _sealed(source_id, [_track("m-1", "ada")]))
    try:
        assert (await small.handle([record])).stored == 1
    finally:
        await pool.close()
    assert offered == []


async def _letters(db: AsyncEngine) -> list[Any]:
    async with db.connect() as conn:
        result = await conn.exec_driver_sql(
            'SELECT reason, "offset", item, payload, published_at FROM dead_letters ORDER BY id'
        )
        return list(result.mappings())
