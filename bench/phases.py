"""The measured phases. Each one isolates one number:

1. ingest — ``/v1/batch`` and single ``/v1/track`` against the API with no consumer running
   (the broker only collects), and the same load against the bare server (the limit); the
   batch load in rounds that alternate between the two;
2. pipeline — consumers start on a full topic; events/s from the first batch until every
   accepted event is in Postgres;
3. raw COPY — the same rows, fresh ids, COPY'd into the same table in the same run;
4. freshness — a steady open-loop load; HTTP accept → row visible in ``events``.
Reads (with a database filled to millions of events) live in :mod:`bench.reads`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import psutil
from uuid_utils.compat import uuid7

from app.timeline.writes import COLUMNS
from bench import loadgen, workload
from bench.config import EVENTS_PER_PERSON, BenchConfig
from bench.profiling import Recorder
from bench.report import Report
from bench.stack import MB, Proc, Stack

# The consumers' summed batch time (from a batch's start until it is stored).
BATCH_SECONDS = "percorso_pipeline_batch_seconds_sum"
BATCHES = "percorso_pipeline_batch_seconds_count"
_STORED = re.compile(
    rb'^percorso_pipeline_events_total\{outcome="(stored|duplicate|dead_letter)"\} (\S+)$', re.M
)


@dataclass
class Run:
    config: BenchConfig
    stack: Stack
    report: Report
    work: workload.Workload
    api: Proc | None = None
    consumers: list[Proc] = field(default_factory=list)
    # Events the API acknowledged: what the pipeline must store.
    published: int = 0

    @property
    def base(self) -> str:
        assert self.api is not None
        return f"http://127.0.0.1:{self.api.port}"

    def write_headers(self) -> dict[str, str]:
        basic = base64.b64encode(f"{self.stack.write_key}:".encode()).decode()
        return {"authorization": f"Basic {basic}"}

    def read_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.stack.read_token}"}

    def consumer_procs(self) -> dict[str, Proc]:
        """The consumers by the names the CPU rows give them."""
        return {f"consumer{i}": c for i, c in enumerate(self.consumers)}


# When, and the CPU seconds each process had used by then.
Mark = tuple[float, dict[str, float | None]]


class CpuWindow:
    """CPU used during a phase, in cores (1.0 = one core busy the whole time): by the given
    processes, by the embedded Postgres and broker, and by the whole machine (others' load
    included). Measures from creation, or from an earlier :meth:`mark`; :meth:`pause` and
    :meth:`resume` leave time out (a phase in rounds, with other load in between)."""

    def __init__(self, stack: Stack, procs: dict[str, Proc], since: Mark | None = None) -> None:
        """``since``: a :meth:`mark` of a window over the same processes."""
        self._stack, self._procs = stack, procs
        self._used: dict[str, float | None] = {}
        self._wall = 0.0
        self._since: Mark | None = self.mark() if since is None else since

    def mark(self) -> Mark:
        """Now, and the CPU time used so far."""
        return time.perf_counter(), self._sample()

    def _sample(self) -> dict[str, float | None]:
        sample: dict[str, float | None] = {k: p.cpu_seconds() for k, p in self._procs.items()}
        own = psutil.Process().cpu_times()
        sample["bench"] = own.user + own.system  # the load generator and pollers
        sample["postgres"] = self._stack.postgres_cpu_seconds()
        sample["broker"] = self._stack.broker_cpu_seconds()
        times = psutil.cpu_times()
        sample["machine"] = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        return sample

    def resume(self) -> None:
        self._since = self.mark()

    def pause(self) -> None:
        assert self._since is not None, "not measuring"
        (started, before), after = self._since, self._sample()
        self._wall += time.perf_counter() - started
        self._since = None
        for key, start in before.items():
            end, used = after.get(key), self._used.get(key, 0.0)
            if start is None or end is None or used is None:
                self._used[key] = None
            else:
                self._used[key] = used + end - start

    def cores(self) -> dict[str, float | None]:
        if self._since is not None:
            self.pause()
        wall = self._wall
        return {k: v / wall if v is not None and wall else None for k, v in self._used.items()}


def cpu_us_per_request(cores: float | None, requests_per_s: float | None) -> float | None:
    """The CPU time a request cost a process that kept ``cores`` busy serving
    ``requests_per_s``, in microseconds."""
    if cores is None or not requests_per_s:
        return None
    return 1e6 * cores / requests_per_s


def cpu_rows(report: Report, section: str, prefix: str, cores: dict[str, float | None]) -> None:
    report.set(**{f"{prefix}_cpu_cores_{k}": v for k, v in cores.items()})
    shown = ", ".join(f"{k} {v:.2f}" for k, v in cores.items() if v is not None)
    report.row(section, f"CPU cores busy: {shown}", None, "")


# -- 1. ingest ------------------------------------------------------------------------------


# Rounds of batch ingest are no shorter than this many requests: each round starts and ends
# with fewer than `concurrency` requests in flight.
_MIN_ROUND_REQUESTS = 250


async def ingest(run: Run) -> None:
    cfg, report = run.config, run.report
    run.api = await run.stack.start_api(cfg.workers)
    bare = await run.stack.start_bare(cfg.workers) if cfg.bare else None
    bodies = run.work.batch_bodies(cfg.batch_size)
    singles = [orjson.dumps(i) for i in workload.single_events(run.work, cfg.track_requests)]
    steady = [
        orjson.dumps(i) for i in workload.single_events(run.work, cfg.track_requests, tag="steady")
    ]
    warm = workload.generate(cfg.batch_size * 5, 50, seed=cfg.seed + 1, prefix="warmup")

    try:
        async with (
            loadgen.session(cfg.concurrency, run.write_headers()) as http,
            loadgen.session(cfg.concurrency, {}) as bare_http,
        ):
            warmup = await loadgen.closed_loop(
                http,
                [(f"{run.base}/v1/batch", b) for b in warm.batch_bodies(cfg.batch_size)],
                cfg.batch_size,
                2,
            )
            run.published += warmup.events
            servers = {"api": (http, run.base, run.api)}
            if bare is not None:
                bare_base = f"http://127.0.0.1:{bare.port}"
                await loadgen.closed_loop(
                    bare_http,
                    [(f"{bare_base}/v1/batch", b) for b in bodies[:20]],
                    cfg.batch_size,
                    2,
                )
                servers["bare"] = (bare_http, bare_base, bare)
            recorder = record(run, run.api, "api-batch-ingest")
            rounds = await _batch_rounds(run, bodies, servers)
            batch, batch_cpu = rounds["api"]
            if recorder:
                report.profiles["API, /v1/batch ingest"] = recorder.stop()
            run.published += batch.events
            track = await loadgen.closed_loop(
                http, [(f"{run.base}/v1/track", b) for b in singles], 1, cfg.track_concurrency
            )
            run.published += track.events
            paced = await loadgen.paced(
                http, f"{run.base}/v1/track", steady, 1, cfg.track_rate_per_s, lambda k, t: None
            )
            run.published += paced.events
            bare_batch = bare_track = None
            if bare is not None:
                bare_batch = rounds["bare"][0]
                bare_track = await loadgen.closed_loop(
                    bare_http,
                    [(f"{bare_base}/v1/track", b) for b in singles],
                    1,
                    cfg.track_concurrency,
                )
    finally:
        if bare is not None:
            run.stack.stop(bare)
            report.set(bare_rss_mb_peak=bare.peak_rss / MB)
    _check(report, "/v1/batch", batch)
    _check(report, "/v1/track", track)
    _check(report, "/v1/track (steady)", paced)
    report.durations_s["ingest_batch"] = batch.seconds
    report.durations_s["ingest_track"] = track.seconds
    report.set(
        batch_ingest_events_per_s=batch.events_per_s,
        batch_requests_per_s=batch.requests_per_s,
        batch_p50_ms=batch.percentile_ms(50),
        batch_p99_ms=batch.percentile_ms(99),
        batch_errors=batch.errors,
        track_requests_per_s=track.requests_per_s,
        track_closed_loop_p50_ms=track.percentile_ms(50),
        track_closed_loop_p99_ms=track.percentile_ms(99),
        track_errors=track.errors + paced.errors,
        # At the target's condition: a steady open-loop rate.
        track_rate_per_s=paced.requests_per_s,
        track_p50_ms=paced.percentile_ms(50),
        track_p99_ms=paced.percentile_ms(99),
        events_accepted=run.published,
    )
    if bare_batch is not None and bare_track is not None:
        _check(report, "bare /v1/batch", bare_batch)
        _check(report, "bare /v1/track", bare_track)
        report.set(
            bare_events_per_s=bare_batch.events_per_s,
            ingest_ratio=batch.events_per_s / bare_batch.events_per_s,
            bare_track_requests_per_s=bare_track.requests_per_s,
            bare_track_p50_ms=bare_track.percentile_ms(50),
            bare_track_p99_ms=bare_track.percentile_ms(99),
            track_ratio=track.requests_per_s / bare_track.requests_per_s,
        )
    report.row(
        "1. ingest",
        f"/v1/batch ({cfg.batch_size}/request, {cfg.concurrency} in flight,"
        f" {cfg.workers} worker{'s' if cfg.workers > 1 else ''})",
        batch.events_per_s,
        "events/s",
        reference=bare_batch.events_per_s if bare_batch else None,
        reference_label="bare",
        ratio=report.values.get("ingest_ratio"),
    )
    report.row(
        "1. ingest",
        "/v1/batch latency p50 / p99",
        batch.percentile_ms(50),
        "ms",
        reference=batch.percentile_ms(99),
        reference_label="p99",
    )
    cpu_rows(report, "1. ingest", "batch", batch_cpu)
    # The server's own cost of a request, which a change to it moves: the events/s ratio
    # also moves with how busy the machine's other core is (load generator, broker).
    api_us = cpu_us_per_request(batch_cpu.get("api"), batch.requests_per_s)
    bare_us = None
    if bare_batch is not None:
        bare_cpu = rounds["bare"][1]
        cpu_rows(report, "1. ingest", "bare_batch", bare_cpu)
        bare_us = cpu_us_per_request(bare_cpu.get("bare"), bare_batch.requests_per_s)
    report.set(batch_cpu_us_per_request=api_us, bare_cpu_us_per_request=bare_us)
    report.row(
        "1. ingest",
        "/v1/batch CPU a request (server process)",
        api_us,
        "µs",
        reference=bare_us,
        reference_label="bare",
    )
    report.row(
        "1. ingest",
        f"/v1/track ({cfg.track_concurrency} in flight)",
        track.requests_per_s,
        "req/s",
        reference=bare_track.requests_per_s if bare_track else None,
        reference_label="bare",
        ratio=report.values.get("track_ratio"),
    )
    report.row(
        "1. ingest",
        "/v1/track latency p50",
        track.percentile_ms(50),
        "ms",
        reference=bare_track.percentile_ms(50) if bare_track else None,
        reference_label="bare",
    )
    report.row(
        "1. ingest",
        "/v1/track latency p99",
        track.percentile_ms(99),
        "ms",
        reference=bare_track.percentile_ms(99) if bare_track else None,
        reference_label="bare",
    )
    report.row(
        "1. ingest",
        f"/v1/track at a steady {paced.requests_per_s:,.0f} req/s: p50 / p99",
        paced.percentile_ms(50),
        "ms",
        reference=paced.percentile_ms(99),
        reference_label="p99",
    )


async def _batch_rounds(
    run: Run, bodies: list[bytes], servers: dict[str, tuple[aiohttp.ClientSession, str, Proc]]
) -> dict[str, tuple[loadgen.LoadResult, dict[str, float | None]]]:
    """Every body sent to each server, in rounds: each round sends a slice to one server
    and then to the next, in turns (API first, then bare first, …). A VM's speed drifts by
    tens of percent within minutes; back-to-back runs of a few seconds each, minutes apart,
    put that drift into the ratio. Per server: the load's result and its CPU window."""
    cfg = run.config
    rounds = max(1, min(cfg.ingest_rounds, len(bodies) // _MIN_ROUND_REQUESTS))
    results = {name: loadgen.LoadResult() for name in servers}
    windows = {name: CpuWindow(run.stack, {name: proc}) for name, (_, _, proc) in servers.items()}
    for window in windows.values():
        window.pause()
    for i in range(rounds):
        part = bodies[i * len(bodies) // rounds : (i + 1) * len(bodies) // rounds]
        for name in list(servers) if i % 2 == 0 else list(servers)[::-1]:
            http, base, _ = servers[name]
            windows[name].resume()
            result = await loadgen.closed_loop(
                http, [(f"{base}/v1/batch", b) for b in part], cfg.batch_size, cfg.concurrency
            )
            windows[name].pause()
            results[name].add(result)
    return {name: (results[name], windows[name].cores()) for name in servers}


# -- 2. pipeline ----------------------------------------------------------------------------


async def pipeline(run: Run) -> None:
    cfg, report, stack = run.config, run.report, run.stack
    target = run.published
    spawned = time.perf_counter()
    run.consumers = [stack.start_consumer(i) for i in range(cfg.consumers)]
    recorder = None
    procs = run.consumer_procs()
    cpu = CpuWindow(stack, procs)
    # Marks until the first batch is done, to measure the CPU from its start on: not the
    # imports and the group join, and not without the first batch (a quick run is one).
    marks: list[Mark] = []
    # (batches committed, events handled, consumer RSS in MB) through the run: memory must
    # not grow with events.
    rss: list[tuple[float, int, float]] = []
    first_at: float | None = None
    done = 0
    async with aiohttp.ClientSession() as http:
        while True:
            now = time.perf_counter()
            done = await handled(http, run.consumers)
            batches = await counter(run.consumers, BATCHES)
            rss.append((batches, done, sum(c.sample() for c in run.consumers) / MB))
            if first_at is None:
                marks.append(cpu.mark())
            if first_at is None and done > 0:
                # Timed from the start of the first batch (a quick run may be one batch).
                first_at = await first_batch_started(run.consumers, now)
                start = next((m for m in reversed(marks) if m[0] <= first_at), marks[0])
                cpu = CpuWindow(stack, procs, since=start)
                marks.clear()
                # Profile the steady state, not imports and the group join.
                recorder = record(run, run.consumers[0], "consumer-pipeline")
            if done >= target:
                break
            if now - spawned > cfg.pipeline_timeout_s:
                raise RuntimeError(
                    f"pipeline: {done} of {target} events after {cfg.pipeline_timeout_s}s\n"
                    + run.consumers[0].log_tail()
                )
            await asyncio.sleep(0.1)
    finished = time.perf_counter()
    pipeline_cpu = cpu.cores()
    rss_start, rss_end, rss_growth = _memory_trend(rss, target)
    if recorder:
        report.profiles["consumer, pipeline phase"] = recorder.stop()
    assert first_at is not None
    rate = done / (finished - first_at) if finished > first_at else None
    conn = await stack.connect()
    try:
        in_db = await conn.fetchval("SELECT count(*) FROM events")
        facts = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM customers) AS customers,
                   (SELECT count(*) FROM customers WHERE merged_into IS NOT NULL) AS merged,
                   (SELECT count(*) FROM identities) AS identities,
                   (SELECT count(*) FROM dead_letters) AS dead_letters,
                   (SELECT count(*) FROM stage_transitions) AS transitions
            """
            if await _has_table(conn, "stage_transitions")
            else """
            SELECT (SELECT count(*) FROM customers) AS customers,
                   (SELECT count(*) FROM customers WHERE merged_into IS NOT NULL) AS merged,
                   (SELECT count(*) FROM identities) AS identities,
                   (SELECT count(*) FROM dead_letters) AS dead_letters
            """
        )
        reasons = await conn.fetch(
            "SELECT left(reason, 300) AS reason, count(*) AS n FROM dead_letters"
            " GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
        )
    finally:
        await conn.close()
    for r in reasons:
        report.note(f"dead letters: {r['n']} x {r['reason']}")
    retried = await counter(run.consumers, "percorso_pipeline_retries_total")
    batches, batch_s = await _batches(run.consumers)
    if in_db < target:
        report.note(f"pipeline: consumers reported {done} handled but events holds {in_db}")
    report.durations_s["pipeline"] = finished - spawned
    report.set(
        pipeline_events_per_s=rate,
        pipeline_events=done,
        pipeline_startup_s=first_at - spawned,
        pipeline_seconds=finished - first_at,
        consumer_rss_mb_start=rss_start,
        consumer_rss_mb_end=rss_end,
        consumer_rss_mb_per_100k_events=rss_growth,
        customers_in_db=facts["customers"],
        customers_merged=facts["merged"],
        identities_in_db=facts["identities"],
        dead_letters=facts["dead_letters"],
        pipeline_retries=retried,
        pipeline_batches=batches,
        pipeline_mean_batch_events=done / batches if batches else None,
        pipeline_mean_batch_ms=1000 * batch_s / batches if batches else None,
    )
    report.row(
        "2. pipeline",
        f"topic → Postgres ({cfg.consumers} consumer, {cfg.partitions} partitions)",
        rate,
        "events/s",
    )
    cpu_rows(report, "2. pipeline", "pipeline", pipeline_cpu)
    report.row("2. pipeline", "consumer start → first batch", first_at - spawned, "s")
    if batches:
        report.row(
            "2. pipeline",
            f"batches: {batches:,.0f}, mean {done / batches:,.0f} events",
            1000 * batch_s / batches,
            "ms",
        )


async def copy_again(
    conn: Any, source_id: uuid.UUID, copy_source_id: uuid.UUID
) -> tuple[int, float]:
    """COPY the rows of ``source_id`` into ``events`` again (fresh event and message ids,
    under ``copy_source_id``) in one transaction, then delete them: ``(rows, seconds)``."""
    rows = await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM events WHERE source_id = $1", source_id
    )
    records = [(uuid7(), copy_source_id, f"copy-{r['message_id']}", *tuple(r)[3:]) for r in rows]
    del rows
    started = time.perf_counter()
    async with conn.transaction():
        await conn.copy_records_to_table("events", records=records, columns=COLUMNS)
    seconds = time.perf_counter() - started
    await conn.execute("DELETE FROM events WHERE source_id = $1", copy_source_id)
    await conn.execute("VACUUM (ANALYZE) events")
    return len(records), seconds


async def raw_copy(run: Run) -> None:
    """The limit for the pipeline: a raw COPY of the rows it stored, in the same run."""
    report, stack = run.report, run.stack
    conn = await stack.connect()
    try:
        copied, seconds = await copy_again(conn, stack.source_id, stack.copy_source_id)
    finally:
        await conn.close()
    rate = copied / seconds
    pipeline_rate = report.values.get("pipeline_events_per_s")
    ratio = pipeline_rate / rate if pipeline_rate else None
    report.durations_s["raw_copy"] = seconds
    report.set(raw_copy_rows_per_s=rate, raw_copy_rows=copied, pipeline_ratio=ratio)
    # Shown on the pipeline's row: pipeline vs the limit.
    for row in report.rows:
        if row.section == "2. pipeline" and row.unit == "events/s":
            row.reference, row.reference_label, row.ratio = rate, "raw COPY", ratio
    report.row("2. pipeline", f"raw COPY of the same {copied:,} rows", rate, "rows/s")


# -- 4. freshness ---------------------------------------------------------------------------


async def freshness(run: Run) -> None:
    """Open-loop ``/v1/batch`` at a steady rate while the consumers run; for the first event
    of each request, the time from the API's 200 to the row being visible in ``events``
    (polled every 20 ms, so each sample is late by up to 20 ms)."""
    cfg, report, stack = run.config, run.report, run.stack
    per_s, size = cfg.freshness_events_per_s, cfg.freshness_batch
    total = int(per_s * cfg.freshness_seconds)
    work = workload.generate(
        total,
        max(1, total // EVENTS_PER_PERSON),
        seed=cfg.seed + 2,
        prefix="fresh",
        start=datetime.now(UTC) - timedelta(seconds=1),
        span=timedelta(seconds=1),
    )
    batches = work.batches(size)
    bodies = [orjson.dumps({"batch": b}) for b in batches]
    sample_of = [b[0]["messageId"] for b in batches]
    accepted: dict[str, float] = {}
    visible: dict[str, float] = {}
    sending = True
    drain_s = max(10.0, min(60.0, cfg.freshness_seconds))

    def on_accepted(k: int, at: float) -> None:
        accepted[sample_of[k]] = at

    async def poll(conn: Any) -> None:
        deadline = None
        while True:
            pending = [m for m in accepted if m not in visible]
            if not sending:
                deadline = deadline or time.perf_counter() + drain_s
                if not pending or time.perf_counter() > deadline:
                    return
            if pending:
                at = time.perf_counter()
                seen = await conn.fetch(
                    "SELECT message_id FROM events WHERE source_id = $1"
                    " AND message_id = ANY($2::text[])",
                    stack.source_id,
                    pending,
                )
                for r in seen:
                    visible[r["message_id"]] = at
            await asyncio.sleep(0.02)

    conn = await stack.connect()
    procs = run.consumer_procs()
    cpu = CpuWindow(stack, {"api": run.api, **procs} if run.api else procs)
    batches_before, batch_s_before = await _batches(run.consumers)
    poller = asyncio.create_task(poll(conn))
    try:
        async with loadgen.session(64, run.write_headers()) as http:
            load = await loadgen.paced(
                http, f"{run.base}/v1/batch", bodies, size, per_s / size, on_accepted
            )
        freshness_cpu = cpu.cores()
        sending = False
        await poller
    finally:
        if not poller.done():
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await conn.close()
    run.published += load.events
    # The first seconds warm the path up; they are not the steady state.
    skip = 2.0 * per_s / size
    delays = [
        (visible[m] - accepted[m]) * 1000
        for k, m in enumerate(sample_of)
        if k >= skip and m in accepted and m in visible
    ]
    missing = sum(1 for m in accepted if m not in visible)
    achieved = load.events / load.seconds if load.seconds else 0
    report.durations_s["freshness"] = load.seconds
    report.set(
        freshness_p50_ms=loadgen.percentile(delays, 50),
        freshness_p95_ms=loadgen.percentile(delays, 95),
        freshness_p99_ms=loadgen.percentile(delays, 99),
        freshness_samples=len(delays),
        freshness_not_visible=missing,
        freshness_offered_events_per_s=per_s,
        freshness_achieved_events_per_s=achieved,
        freshness_http_errors=load.errors,
    )
    report.row(
        "3. freshness",
        f"accept → visible p50 (steady {achieved:,.0f} events/s)",
        loadgen.percentile(delays, 50),
        "ms",
        reference=loadgen.percentile(delays, 95),
        reference_label="p95",
    )
    cpu_rows(report, "3. freshness", "freshness", freshness_cpu)
    batches, batch_s = await _batches(run.consumers)
    batches, batch_s = batches - batches_before, batch_s - batch_s_before
    report.set(
        freshness_batches=batches,
        freshness_mean_batch_ms=1000 * batch_s / batches if batches else None,
    )
    if batches:
        report.row(
            "3. freshness",
            f"batches: {batches:,.0f}, mean {load.events / batches:,.0f} events",
            1000 * batch_s / batches,
            "ms",
        )
    if missing:
        report.note(
            f"freshness: {missing} sampled events were not visible {drain_s:.0f} s after the load"
        )
    if achieved < 0.95 * per_s:
        report.note(f"freshness: offered {per_s} events/s, the API accepted {achieved:,.0f}/s")


# -- helpers --------------------------------------------------------------------------------


def _memory_trend(
    samples: list[tuple[float, int, float]], target: int
) -> tuple[float | None, float | None, float | None]:
    """Consumer RSS once warm, at the end, and the least-squares growth in MB per 100,000
    events between the two, from samples of (batches committed, events handled, RSS in MB).
    Flat memory: a growth near zero.

    Warm: two batches committed and a tenth of the events handled. The first batches fill
    the bounded caches and the allocator's arenas; a backlog is taken in batches of up to
    about 170,000 events, so a run of 200,000 may have only three, and the second still
    grows the heap (600,000 events, RSS after each batch: 666, 748, 749, 748 MB). Counted
    in batches, not in changes of the events handled: those are counted as each of a
    batch's transactions commits. No trend (None) without two samples at different counts
    once warm."""
    warm = [(n, mb) for b, n, mb in samples if b >= 2 and n >= target // 10 and mb > 0]
    xs, ys = [n for n, _ in warm], [mb for _, mb in warm]
    if len(set(xs)) < 2:
        return (ys[0], ys[-1], None) if warm else (None, None, None)
    slope = statistics.linear_regression(xs, ys).slope
    return ys[0], ys[-1], slope * 100_000


async def first_batch_started(consumers: list[Proc], now: float) -> float:
    """When the consumers' first batch started, once one is done: back from ``now`` by the
    longest any consumer has spent on batches so far."""
    return now - max([await counter([c], BATCH_SECONDS) for c in consumers])


async def handled(http: aiohttp.ClientSession, consumers: list[Proc]) -> int:
    """Events the consumers have committed (stored + duplicates + dead letters), from their
    Prometheus endpoints; 0 for a consumer that is not serving metrics yet."""
    total = 0
    for proc in consumers:
        if not proc.alive():
            raise RuntimeError(f"{proc.role} exited:\n{proc.log_tail()}")
        text = await _scrape(http, proc, "percorso_pipeline_events_total")
        total += sum(int(float(v)) for _, v in _STORED.findall(text))
    return total


async def _batches(consumers: list[Proc]) -> tuple[float, float]:
    """Batches the consumers have stored so far, and the seconds they took."""
    return (
        await counter(consumers, BATCHES),
        await counter(consumers, BATCH_SECONDS),
    )


async def counter(consumers: list[Proc], name: str) -> float:
    """A Prometheus counter summed over the consumers (and over its labels)."""
    total = 0.0
    async with aiohttp.ClientSession() as http:
        for proc in consumers:
            for line in (await _scrape(http, proc, name)).decode().splitlines():
                if line.startswith((name + " ", name + "{")):
                    total += float(line.split()[-1])
    return total


async def _scrape(http: aiohttp.ClientSession, proc: Proc, name: str) -> bytes:
    """The consumer's metric ``name`` in Prometheus' text format; empty while it is not
    serving. Asked for by name: the whole page (process metrics included) costs the
    consumer about a millisecond of its interpreter, and the pipeline phase asks ten times
    a second."""
    try:
        async with http.get(
            f"http://127.0.0.1:{proc.port}/metrics",
            params={"name[]": name},
            timeout=aiohttp.ClientTimeout(total=2),
        ) as resp:
            return await resp.read()
    except (aiohttp.ClientError, TimeoutError):
        return b""


async def _has_table(conn: Any, name: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


def record(run: Run, proc: Proc, name: str) -> Recorder | None:
    if not run.config.profile:
        return None
    return Recorder(proc.pid, run.stack.run_dir / f"{name}.collapsed")


def _check(report: Report, what: str, result: loadgen.LoadResult) -> None:
    if result.errors:
        report.note(f"{what}: {result.errors} failed requests (statuses {result.statuses})")
