"""Garbage-collector settings for the long-running processes (API workers, consumers).

CPython's default thresholds (700, 10, 10) start a collection every 700 container
allocations, and each one walks every young object still alive. Decoding a batch creates
tens of thousands of dicts that stay alive until the batch commits, so the collector walked
them again and again: decoding 2,000 touchpoints took 21 µs each instead of 5 µs. Almost
nothing here forms reference cycles (reference counting frees it), so collections can be
rare; the objects alive after start-up (modules, models, schemas) are frozen out of them.
"""

from __future__ import annotations

import gc
import time

# A young collection every 50,000 allocations: a batch's objects are freed by reference
# counting long before the collector would look at them.
THRESHOLDS = (50_000, 20, 10)
# The share of its time an idle consumer spends on full collections, at most: the next one
# waits until the last one's duration is this share of the time since.
FULL_SHARE = 0.002


def tune() -> None:
    """Call once the process has finished starting up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


class BetweenBatches:
    """Collections for a process that works in batches (the consumer): none while a batch
    runs; after it, the young generations, or everything when the last full collection is
    `full_every_s` old (or older, after a slow one).

    Even at `THRESHOLDS`, the older generations' collections walked a 10,000-record batch's
    live objects several times per batch (about a sixth of the consumer's time). Once a batch
    has committed, reference counting has freed nearly all of it, so a collection between
    batches finds little to walk; what a batch leaves in reference cycles waits at most
    until the batch ends. A full collection then walks only the few objects alive between
    batches (about 1 ms after a 10,000-record batch), so it runs every second: garbage that
    outlived a young collection does not pile up in the oldest generation.

    After a backlog, though, a full collection also walks what the process keeps between
    batches, chiefly the identifier-extraction memo (up to 65,536 entries, a key and a value
    each to visit): 12-30 ms each in make bench's freshness phase, once a second, with 0
    objects of garbage found. So the next full collection waits until the last one's
    duration is at most `FULL_SHARE` of the time since (a 20 ms one: 10 s), at least
    `full_every_s` and at most `busy_full_every_s`, as while busy.

    A consumer catching up has the next batch in hand when one ends (decoded while the last
    run of the one before was stored), and any collection then walks all of its objects:
    200-250 ms with 240,000 of them alive (bench.handler), and they held 0-4 objects of
    garbage. So while busy, only a full collection every `busy_full_every_s`.
    """

    def __init__(self, full_every_s: float = 1.0, busy_full_every_s: float = 60.0) -> None:
        self._full_every_s = full_every_s
        self._busy_full_every_s = busy_full_every_s
        self._last_full = time.monotonic()
        self._next_full_s = full_every_s  # after the last full collection

    def start(self) -> None:
        """Call once the process has finished starting up."""
        gc.collect()
        gc.freeze()
        gc.disable()
        self._last_full = time.monotonic()

    def after_batch(self, *, busy: bool = False) -> None:
        """``busy``: the next batch is in hand already."""
        now = time.monotonic()
        if busy:
            if now - self._last_full >= self._busy_full_every_s:
                gc.collect()
                self._last_full = now
        elif now - self._last_full >= self._next_full_s:
            gc.collect()
            self._last_full = time.monotonic()
            spaced = max(self._full_every_s, (self._last_full - now) / FULL_SHARE)
            self._next_full_s = min(spaced, self._busy_full_every_s)
        else:
            gc.collect(1)
