"""HTTP load generation (aiohttp, keep-alive). Bodies are serialised before the clock starts,
so the generator spends its CPU on sockets, not on building JSON.

* :func:`closed_loop` — ``concurrency`` workers send requests back to back: throughput.
* :func:`paced` — an open loop at a fixed request rate (not slowed by slow answers): freshness.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson


@dataclass(slots=True)
class LoadResult:
    requests: int = 0
    events: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def add(self, other: LoadResult) -> None:
        """Count in ``other``, a later round of the same load."""
        self.requests += other.requests
        self.events += other.events
        self.errors += other.errors
        self.seconds += other.seconds
        self.latencies_ms += other.latencies_ms
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0 to 100), nearest-rank on sorted values; None when empty."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1])


def session(concurrency: int, headers: dict[str, str]) -> aiohttp.ClientSession:
    # An idle connection is dropped here before the server drops it (uvicorn after 5 s):
    # a request written to a connection the server is closing fails, and bench.ab's
    # servers sit idle while the others take their turn.
    connector = aiohttp.TCPConnector(
        limit=concurrency, ttl_dns_cache=None, force_close=False, keepalive_timeout=3
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers={"content-type": "application/json", **headers},
        timeout=aiohttp.ClientTimeout(total=60),
        skip_auto_headers=("User-Agent",),
    )


async def closed_loop(
    http: aiohttp.ClientSession,
    targets: Sequence[tuple[str, bytes | None]],
    events_per_request: int,
    concurrency: int,
) -> LoadResult:
    """Send every ``(url, body)`` once (POST, or GET when ``body`` is None) with
    ``concurrency`` in flight. ``events`` counts what the server reports as ``accepted``
    (``events_per_request`` when it does not say)."""
    result = LoadResult()
    cursor = iter(targets)

    async def worker() -> None:
        for url, body in cursor:
            started = time.perf_counter()
            if body is None:
                async with http.get(url) as resp:
                    payload = await resp.read()
            else:
                async with http.post(url, data=body) as resp:
                    payload = await resp.read()
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[resp.status] = result.statuses.get(resp.status, 0) + 1
            result.requests += 1
            if resp.status == 200:
                result.events += _accepted(payload, events_per_request) if body else 0
            else:
                result.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


async def paced(
    http: aiohttp.ClientSession,
    url: str,
    bodies: Sequence[bytes],
    events_per_body: int,
    requests_per_s: float,
    on_accepted: Callable[[int, float], None],
    max_in_flight: int = 256,
) -> LoadResult:
    """Send body ``k`` at ``start + k / requests_per_s`` whatever the server's pace (an open
    loop, as real clients are). ``on_accepted(k, monotonic_time)`` runs on each 200."""
    result = LoadResult()
    gate = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def send(k: int) -> None:
        try:
            started = time.perf_counter()
            async with http.post(url, data=bodies[k]) as resp:
                payload = await resp.read()
            now = time.perf_counter()
            result.latencies_ms.append((now - started) * 1000)
            result.statuses[resp.status] = result.statuses.get(resp.status, 0) + 1
            result.requests += 1
            if resp.status == 200:
                result.events += _accepted(payload, events_per_body)
                on_accepted(k, now)
            else:
                result.errors += 1
        finally:
            gate.release()

    start = time.perf_counter()
    for k in range(len(bodies)):
        delay = start + k / requests_per_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        task = asyncio.create_task(send(k))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - start
    return result


def _accepted(payload: bytes, default: int) -> int:
    try:
        answer = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return default
    accepted = answer.get("accepted") if isinstance(answer, dict) else None
    return accepted if isinstance(accepted, int) else default
