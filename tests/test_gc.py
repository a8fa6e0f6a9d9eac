"""Garbage collection between a consumer's batches."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app.kit.gc import BetweenBatches


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.enable()
    gc.set_threshold(*threshold)


def _collections() -> list[int]:
    return [generation["collections"] for generation in gc.get_stats()]


def test_no_collection_while_a_batch_runs_young_ones_after_it_and_all_once_due(
    restore_gc: None,
) -> None:
    collector = BetweenBatches(full_every_s=3600)
    collector.start()
    assert not gc.isenabled()
    before = _collections()
    garbage = [[[]] for _ in range(100_000)]  # a batch's worth of container allocations
    del garbage
    assert _collections() == before  # nothing automatic

    collector.after_batch()
    young = _collections()
    assert young[1] == before[1] + 1  # generations 0 and 1
    assert young[2] == before[2]

    BetweenBatches(full_every_s=0).after_batch()  # a full collection is due
    assert _collections()[2] == young[2] + 1


def test_with_the_next_batch_in_hand_only_a_full_collection_and_only_once_due(
    restore_gc: None,
) -> None:
    """The next batch's objects are alive then: every collection would walk them all."""
    collector = BetweenBatches(full_every_s=0, busy_full_every_s=3600)
    collector.start()
    before = _collections()
    collector.after_batch(busy=True)
    assert _collections() == before

    BetweenBatches(busy_full_every_s=0).after_batch(busy=True)
    after = _collections()
    assert after[2] == before[2] + 1
