"""The consumer process takes its batching from the settings, and behind a backlog tops a
batch up with the fetches that follow."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from app.config import Settings
from app.journey.model import load_model
from app.pipeline import runner
from app.pipeline.handler import BatchHandler
from app.pipeline.runner import Pipeline


@asynccontextmanager
async def _unstarted(settings: Settings, **update: Any) -> AsyncIterator[Pipeline]:
    """A consumer with these settings, never run: nothing connects before run() (the pool is
    only handed to the batch handler). Its Kafka clients are stopped afterwards."""
    tuned = settings.model_copy(update={"pipeline_decode_workers": 0, **update})
    consumer = Pipeline(tuned, cast(Any, None), load_model(tuned.journey_model))
    kafka, dlq = consumer._consumer, consumer._dlq  # a test may stand in for the consumer
    try:
        yield consumer
    finally:
        await kafka.stop()
        await dlq.stop()


async def test_runs_are_as_large_as_pipeline_run_events(settings: Settings) -> None:
    async with _unstarted(settings, pipeline_run_events=123, pipeline_max_batch=45) as consumer:
        assert consumer._handler._max_events == 123
    # The handler's own default is the setting's.
    handler_default = inspect.signature(BatchHandler).parameters["max_events"].default
    assert Settings.model_fields["pipeline_run_events"].default == handler_default


class _Fetches:
    """Stands in for the Kafka consumer's ``getmany``: gives the scripted fetches in turn
    (then nothing) and records each call's ``max_records``."""

    def __init__(self, *fetches: dict[TopicPartition, list[int]]) -> None:
        self._fetches = list(fetches)
        self.asked: list[int] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[int]]:
        self.asked.append(max_records)
        return self._fetches.pop(0) if self._fetches else {}

    @classmethod
    def standing_in(cls, consumer: Pipeline, *fetches: dict[TopicPartition, list[int]]) -> _Fetches:
        """Scripted fetches, standing in for ``consumer``'s Kafka consumer."""
        script = cls(*fetches)
        consumer._consumer = cast(Any, script)
        return script


@pytest.fixture
async def topping_up(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Pipeline]:
    """A consumer whose batches hold up to 10 records; 3 in a fetch mean a backlog."""
    monkeypatch.setattr(runner, "BACKLOG_RECORDS", 3)
    async with _unstarted(settings, pipeline_max_batch=10) as consumer:
        yield consumer


P0, P1 = TopicPartition("touchpoints", 0), TopicPartition("touchpoints", 1)


async def test_a_backlog_batch_takes_the_fetches_that_follow(topping_up: Pipeline) -> None:
    fetches = _Fetches.standing_in(topping_up, {P0: [3, 4], P1: [7, 8]}, {P0: [5]})
    batch: dict[Any, list[Any]] = {P0: [1, 2], P1: [6]}
    await topping_up._top_up(batch)
    # Each partition's messages in order; the fetch of 1 record (no backlog) ended it.
    assert batch == {P0: [1, 2, 3, 4, 5], P1: [6, 7, 8]}
    assert fetches.asked == [7, 3]


async def test_topping_up_stops_at_the_batch_limit(topping_up: Pipeline) -> None:
    fetches = _Fetches.standing_in(topping_up, {P0: [4, 5, 6, 7], P1: [8, 9, 10]}, {P0: [11]})
    batch: dict[Any, list[Any]] = {P0: [1, 2, 3]}
    await topping_up._top_up(batch)
    assert batch == {P0: [1, 2, 3, 4, 5, 6, 7], P1: [8, 9, 10]}
    assert fetches.asked == [7]


async def test_a_consumer_that_keeps_up_stores_what_it_has(topping_up: Pipeline) -> None:
    fetches = _Fetches.standing_in(topping_up, {P0: [3, 4, 5]})
    batch: dict[Any, list[Any]] = {P0: [1, 2]}  # fewer than BACKLOG_RECORDS: no backlog
    await topping_up._top_up(batch)
    assert batch == {P0: [1, 2]}
    assert fetches.asked == []


async def test_no_topping_up_while_partitions_are_being_revoked(topping_up: Pipeline) -> None:
    fetches = _Fetches.standing_in(topping_up, {P0: [4]})
    topping_up._revoking.set()
    batch: dict[Any, list[Any]] = {P0: [1, 2, 3]}
    await topping_up._top_up(batch)
    assert batch == {P0: [1, 2, 3]}
    assert fetches.asked == []
