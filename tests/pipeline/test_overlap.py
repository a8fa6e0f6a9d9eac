"""Batches that overlap: the next batch is decoded while the last run of the one before is
stored. Runs are still stored one at a time, in the order they were queued; a run that
fails abandons those queued after it, and a batch begun afterwards is stored as usual."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import create_pool
from app.identity.policy import MergePolicy
from app.journey.model import load_model
from app.kit.metrics import PIPELINE_EVENTS
from app.pipeline.handler import BatchHandler, Outcome, Record, RunAbandoned
from app.touchpoint import Touchpoint
from tests.factories import touchpoint


@pytest.fixture
async def handler(settings: Settings, db: AsyncEngine) -> AsyncIterator[BatchHandler]:
    """Runs of 2 events at first (a quarter of 8) for a batch begun while no run is being
    stored, so such a batch below is several runs; one begun meanwhile goes in runs of 8."""
    pool = await create_pool(settings)
    policy = MergePolicy.parse(settings.merge_limits, settings.merge_priority)
    yield BatchHandler(pool, load_model(settings.journey_model), policy, max_events=8)
    await pool.close()


def _records(touchpoints: list[Touchpoint]) -> list[Record]:
    return [Record("touchpoints", 0, n, None, tp.to_bytes()) for n, tp in enumerate(touchpoints)]


class _Runs:
    """Records each run's store: when it starts and ends, by its events' messages. The
    first run holding message ``fail_on`` fails."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_on: str | None = None) -> None:
        self.log: list[tuple[str, tuple[str, ...]]] = []
        store = BatchHandler._store

        async def recorded(handler: BatchHandler, *args: Any) -> Outcome:
            nonlocal fail_on
            run = tuple(tp.message_id for tp in args[1])
            self.log.append(("start", run))
            if fail_on in run:
                fail_on = None
                raise RuntimeError("the database went away")
            try:
                return await store(handler, *args)
            finally:
                self.log.append(("end", run))

        monkeypatch.setattr(BatchHandler, "_store", recorded)

    def stored(self) -> list[str]:
        return [m for what, run in self.log if what == "start" for m in run]


async def test_the_next_batch_is_begun_while_the_last_run_of_one_is_stored_and_stored_after_it(
    monkeypatch: pytest.MonkeyPatch, handler: BatchHandler, source_id: uuid.UUID, db: AsyncEngine
) -> None:
    browsing = [
        touchpoint(source_id, anonymous_id="ada-laptop", message_id=f"a{n}", at=n) for n in range(7)
    ]
    # Ada logs in, and her later events name only her user id.
    later = [
        touchpoint(source_id, anonymous_id="ada-laptop", user_id="ada", message_id="b0", at=10),
        *(touchpoint(source_id, user_id="ada", message_id=f"b{n}", at=10 + n) for n in range(1, 6)),
    ]
    runs = _Runs(monkeypatch)

    first = await handler.begin(_records(browsing))
    assert not first.done()  # its last run is yet to be stored
    second = await handler.begin(_records(later))
    outcomes = [await first, await second]

    assert [(o.stored, o.duplicates) for o in outcomes] == [(7, 0), (6, 0)]
    # One run at a time, in order: every run ends before the next starts.
    assert [what for what, _ in runs.log] == ["start", "end"] * (len(runs.log) // 2)
    assert runs.stored() == [tp.message_id for tp in browsing + later]
    async with db.connect() as conn:
        people = await conn.scalar(text("SELECT count(*) FROM customers WHERE merged_into IS NULL"))
        counted = await conn.scalar(text("SELECT sum(event_count) FROM customers"))
    assert (people, counted) == (1, 13)


async def test_a_batch_begun_while_the_one_before_is_stored_goes_in_whole_runs(
    monkeypatch: pytest.MonkeyPatch, handler: BatchHandler, source_id: uuid.UUID
) -> None:
    def batch(prefix: str, size: int) -> list[Touchpoint]:
        return [
            touchpoint(source_id, anonymous_id=f"{prefix}-dev", message_id=f"{prefix}{n}", at=n)
            for n in range(size)
        ]

    runs = _Runs(monkeypatch)
    first = await handler.begin(_records(batch("a", 7)))
    second = await handler.begin(_records(batch("b", 10)))  # the first's last run pending
    await first
    await second
    third = await handler.handle(_records(batch("c", 7)))  # begun once all is stored

    assert third.stored == 7
    sizes = [len(run) for what, run in runs.log if what == "start"]
    # A quarter and a half of 8 first, so the database starts early; the second batch
    # goes whole, as the database is busy meanwhile (each run locks, plans and updates its
    # customers once); the third starts small again.
    assert sizes == [2, 4, 1, 8, 2, 2, 4, 1]


async def test_a_run_that_fails_abandons_the_runs_queued_after_it(
    monkeypatch: pytest.MonkeyPatch, handler: BatchHandler, source_id: uuid.UUID, db: AsyncEngine
) -> None:
    def batch(prefix: str) -> list[Touchpoint]:
        return [
            touchpoint(source_id, anonymous_id=f"{prefix}-dev", message_id=f"{prefix}{n}", at=n)
            for n in range(3)
        ]

    runs = _Runs(monkeypatch, fail_on="a2")  # the first batch's last run fails
    first = await handler.begin(_records(batch("a")))
    second = await handler.begin(_records(batch("b")))

    with pytest.raises(RuntimeError, match="went away"):
        await first
    with pytest.raises(RunAbandoned) as abandoned:
        await second
    assert isinstance(abandoned.value.__cause__, RuntimeError)  # the failure it followed
    assert not any(m.startswith("b") for m in runs.stored())

    # A batch begun once the failure is known (the redelivery) is stored as usual.
    again = await handler.handle(_records(batch("a")[2:] + batch("b")))
    assert (again.stored, again.duplicates) == (4, 0)
    async with db.connect() as conn:
        stored = await conn.scalar(text("SELECT count(*) FROM events"))
    assert stored == 6


async def test_the_runs_a_failed_batch_stored_count_as_stored_at_once_and_duplicates_after(
    monkeypatch: pytest.MonkeyPatch, handler: BatchHandler, source_id: uuid.UUID, db: AsyncEngine
) -> None:
    """Each run counts in the metrics once it has committed: the events of a batch's first
    run are stored even though its second run failed, and its redelivery finds them stored."""
    batch = [
        touchpoint(source_id, anonymous_id="ada-dev", message_id=f"a{n}", at=n) for n in range(6)
    ]
    _Runs(monkeypatch, fail_on="a5")  # the second run (a2 to a5)
    stored, duplicates = PIPELINE_EVENTS.labels("stored"), PIPELINE_EVENTS.labels("duplicate")
    before = stored._value.get(), duplicates._value.get()

    with pytest.raises(RuntimeError, match="went away"):
        await handler.handle(_records(batch))
    assert stored._value.get() - before[0] == 2
    again = await handler.handle(_records(batch))  # the redelivery

    assert (again.stored, again.duplicates) == (4, 2)
    async with db.connect() as conn:
        rows = await conn.scalar(text("SELECT count(*) FROM events"))
    assert rows == 6
    assert (stored._value.get() - before[0], duplicates._value.get() - before[1]) == (6, 2)
