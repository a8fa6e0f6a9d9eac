"""Garbage collection between a consumer's batches."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app.kit import gc as kit_gc
from app.kit.gc import FULL_SHARE, BetweenBatches


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


class _Collector:
    """The gc module's collect, on a clock the test moves: a full collection takes
    ``full_s``, a young one nothing."""

    def __init__(self, full_s: float) -> None:
        self.now, self.full_s = 0.0, full_s
        self.generations: list[int] = []

    def monotonic(self) -> float:
        return self.now

    def collect(self, generation: int = 2) -> int:
        self.generations.append(generation)
        if generation == 2:
            self.now += self.full_s
        return 0


@pytest.mark.parametrize("full_s", [0.001, 0.020, 1.0])
def test_a_slow_full_collection_is_followed_by_the_next_one_later(
    monkeypatch: pytest.MonkeyPatch, full_s: float
) -> None:
    """After a backlog a full collection walks the memos too (tens of ms, once a second);
    the next one waits until that is at most FULL_SHARE of the time, at least a second and
    at most as long as while busy."""
    fake = _Collector(full_s)
    monkeypatch.setattr(kit_gc, "gc", fake)
    monkeypatch.setattr(kit_gc.time, "monotonic", fake.monotonic)
    collector = BetweenBatches(full_every_s=1.0, busy_full_every_s=60.0)
    fake.now = 1.0
    collector.after_batch()
    assert fake.generations == [2]
    # 1 s after a 1 ms one; 10 s after 20 ms; a minute after a second.
    wait = min(max(1.0, full_s / FULL_SHARE), 60.0)
    fake.now += wait - 0.1
    collector.after_batch()
    assert fake.generations == [2, 1]  # not yet: only the young generations
    fake.now += 0.2
    collector.after_batch()
    assert fake.generations == [2, 1, 2]
