"""``python -m bench [--quick]``: start the stack, run the phases, print the table, write
``bench/results/latest.json`` and a dated copy. See ``python -m bench --help``."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial

import uvloop

from app.config import Settings
from bench import config as bench_config
from bench import phases, reads, workload
from bench.config import BenchConfig
from bench.report import Report
from bench.stack import Stack


async def run(cfg: BenchConfig, report: Report) -> None:
    run_id = report.started_at.strftime("%Y%m%d%H%M%S")
    step = partial(_step, report)
    with step("workload"):
        work = workload.generate(cfg.events, cfg.people, seed=cfg.seed)
    report.set(
        events=cfg.events,
        people=cfg.people,
        mean_event_bytes=work.mean_event_bytes(),
        channel_mix=work.type_mix(),
    )
    stack = Stack(run_id, Settings().data_dir / "bench" / run_id, partitions=cfg.partitions)
    _stop_on_signals(stack)
    try:
        with step("stack start"):
            await stack.start()
        print(f"  logs: {stack.run_dir}", flush=True)
        r = phases.Run(cfg, stack, report, work)
        with step("1. ingest (API, no consumer)"):
            collect_now()
            await phases.ingest(r)
        with step("2. pipeline (topic → Postgres)"):
            await phases.pipeline(r)
        with step("2b. raw COPY of the same rows"):
            await phases.raw_copy(r)
        if cfg.freshness:
            with step(f"3. freshness ({cfg.freshness_events_per_s:,} events/s)"):
                collect_now()
                await phases.freshness(r)
        if cfg.reads:
            with step("4. reads"):
                collect_now()
                await reads.reads(r)
        _memory(r)
    finally:
        with step("stack stop"):
            await stack.close()


def collect_now() -> None:
    """Collect garbage and freeze what is alive (the workload, millions of objects) out of
    later collections, before a phase that measures latencies. The load generator's own
    collections otherwise stall its event loop, and every request in flight is timed late:
    a full collection walked the workload for 0.1-0.7 s, and the middle generation's took
    2-16 ms during the ingest phase. Young collections stay frequent, so each is short."""
    gc.collect()
    gc.freeze()


def _memory(r: phases.Run) -> None:
    report = r.report
    api_peak = r.api.peak_rss / (1024 * 1024) if r.api else None
    consumer_peak = max((c.peak_rss for c in r.consumers), default=0) / (1024 * 1024) or None
    report.set(api_rss_mb_peak=api_peak, consumer_rss_mb_peak=consumer_peak)
    report.row("5. memory", "API peak RSS", api_peak, "MB")
    report.row("5. memory", "consumer peak RSS", consumer_peak, "MB")
    report.row(
        "5. memory",
        "consumer RSS once warm (two batches and 10% of events handled)",
        report.values.get("consumer_rss_mb_start"),
        "MB",
        reference=report.values.get("consumer_rss_mb_end"),
        reference_label="at end",
    )
    report.row(
        "5. memory",
        "consumer RSS growth from warm to end",
        report.values.get("consumer_rss_mb_per_100k_events"),
        "MB per 100k events",
    )
    if "events_in_db" not in report.values:
        report.set(events_in_db=report.values.get("pipeline_events"))


def _stop_on_signals(stack: Stack) -> None:
    """Ctrl-C or SIGTERM: stop the children at once (so no phase waits on them), then cancel
    the run, whose ``finally`` drops the database and stops the servers. A second signal
    cancels again, in case a library swallowed the first cancellation."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def interrupt() -> None:
        print("bench: interrupted; stopping", file=sys.stderr, flush=True)
        stack.terminate_children()
        main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. a background job's SIGINT
            loop.add_signal_handler(sig, interrupt)


@contextmanager
def _step(report: Report, name: str) -> Iterator[None]:
    """Print a step with its duration (and record it)."""
    print(f"bench: {name} …", flush=True)
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - started
        report.durations_s[f"step: {name}"] = seconds
        print(f"bench: {name} done in {seconds:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    cfg = bench_config.parse(argv)
    report = Report(started_at=datetime.now(UTC))
    started = time.perf_counter()
    failed: BaseException | None = None
    try:
        uvloop.run(run(cfg, report))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; nothing written", file=sys.stderr)
        return 130
    except Exception as exc:  # report what was measured before the failure
        failed = exc
        report.note(f"run failed: {type(exc).__name__}: {exc}")
    report.durations_s["total"] = time.perf_counter() - started
    print()
    print(report.table())
    latest, dated = report.write(asdict(cfg))
    print(f"\nwrote {latest} and {dated.name}")
    if failed is not None:
        print(f"bench: failed: {failed!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
