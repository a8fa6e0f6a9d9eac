"""Per-source rate limiting of the tracking API.

A token bucket per source, in process: each API replica enforces the limit on its own, so
N replicas behind a load balancer admit up to N times the configured rate. That is the
usual trade for not putting a shared store on the hot path; put the limit where the
balancer is if it must be global.

Within a replica, each of its W worker processes has buckets of its own, filled at 1/W of
the rate, so the replica as a whole admits the configured rate; a 429 states that rate.

A request costs one token per event. It is admitted when the bucket holds at least
``min(cost, capacity)`` tokens, and then pays the full cost: a batch larger than the bucket
is not refused forever, it leaves the bucket in debt instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from app.errors import ProblemError

_MAX_BUCKETS = 10_000


class RateLimited(ProblemError):
    status, type, title = 429, "rate-limited", "Too many events"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Not thread-safe; meant for one event loop (one API process)."""

    def __init__(
        self,
        default_rate: float,
        burst_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        workers: int = 1,
    ) -> None:
        self._default_rate = default_rate
        self._burst_s = burst_s
        self._workers = workers
        self._clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}

    def check(self, key: Hashable, cost: int, rate: float | None = None) -> None:
        """Admit ``cost`` events for ``key`` at ``rate`` (the replica's, this worker taking
        its share) or raise :class:`RateLimited` (429) with a ``Retry-After`` header (whole
        seconds, at least 1)."""
        stated = rate or self._default_rate
        rate = stated / self._workers
        capacity = max(rate * self._burst_s, 1.0)
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._buckets.clear()  # bounded memory; a cleared bucket starts full
            bucket = self._buckets[key] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        needed = min(float(cost), capacity)
        if bucket.tokens < needed:
            wait = max(1, math.ceil((needed - bucket.tokens) / rate))
            raise RateLimited(
                f"this source may send {stated:g} events per second; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        bucket.tokens -= cost
