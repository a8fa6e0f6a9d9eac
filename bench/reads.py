"""Phase 4, reads: timeline (first page) and profile latency for customers with many events,
in a database of millions of events.

The database is filled server-side (``INSERT … SELECT`` copies of the rows the pipeline
stored, under another source, shifted back in time), not through the pipeline: the point
is the size of the table and its indexes, not how it got there. Then ``heavy_customers``
customers get ``heavy_events`` events each the same way.
"""

from __future__ import annotations

import time
from typing import Any

from app.timeline.writes import COLUMNS
from bench import loadgen
from bench.phases import CpuWindow, Run, cpu_rows, record


def copies(**changed: str) -> str:
    """``INSERT INTO events … SELECT … FROM events``: copies of stored rows, each column as
    stored unless ``changed`` gives its SQL expression. The columns are named, not counted,
    so the two lists always agree, whatever the order of :data:`COLUMNS`."""
    unknown = changed.keys() - set(COLUMNS)
    if unknown:
        raise ValueError(f"not columns of events: {sorted(unknown)}")
    selected = ", ".join(changed.get(c, c) for c in COLUMNS)
    return f"INSERT INTO events ({', '.join(COLUMNS)}) SELECT {selected} FROM events"


async def reads(run: Run) -> None:
    cfg, report, stack = run.config, run.report, run.stack
    conn = await stack.connect()
    try:
        uuid_fn = "uuidv7()" if await _has_function(conn, "uuidv7") else "gen_random_uuid()"
        started = time.perf_counter()
        await _fill(conn, run, cfg.read_db_events, uuid_fn)
        report.durations_s["reads_fill"] = time.perf_counter() - started
        started = time.perf_counter()
        heavy = await _heavy_customers(conn, run, cfg.heavy_customers, cfg.heavy_events, uuid_fn)
        await conn.execute("VACUUM (ANALYZE) events")
        report.durations_s["reads_heavy_and_vacuum"] = time.perf_counter() - started
        in_db = await conn.fetchval("SELECT count(*) FROM events")
        heavy_events = await conn.fetchval(
            "SELECT min(n) FROM (SELECT count(*) AS n FROM events"
            " WHERE customer_id = ANY($1::uuid[]) GROUP BY customer_id) AS c",
            heavy,
        )
    finally:
        await conn.close()

    n = cfg.read_requests
    timeline = [
        (f"{run.base}/v1/customers/{heavy[i % len(heavy)]}/timeline", None) for i in range(n)
    ]
    profile = [(f"{run.base}/v1/customers/{heavy[i % len(heavy)]}", None) for i in range(n)]
    async with loadgen.session(cfg.read_concurrency, run.read_headers()) as http:
        await loadgen.closed_loop(http, timeline[:20] + profile[:20], 0, 2)  # warm-up
        cpu = CpuWindow(stack, {"api": run.api} if run.api else {})
        recorder = record(run, run.api, "api-timeline-reads") if run.api else None
        tl = await loadgen.closed_loop(http, timeline, 0, cfg.read_concurrency)
        timeline_cpu = cpu.cores()
        if recorder:
            report.profiles["API, timeline reads"] = recorder.stop()
        pr = await loadgen.closed_loop(http, profile, 0, cfg.read_concurrency)
    for what, result in (("timeline", tl), ("profile", pr)):
        if result.errors:
            report.note(f"reads: {what}: {result.errors} failed ({result.statuses})")
    report.set(
        events_in_db=in_db,
        reads_heavy_customers=len(heavy),
        reads_heavy_customer_events=heavy_events,
        timeline_p50_ms=tl.percentile_ms(50),
        timeline_p99_ms=tl.percentile_ms(99),
        timeline_requests_per_s=tl.requests_per_s,
        profile_p50_ms=pr.percentile_ms(50),
        profile_p99_ms=pr.percentile_ms(99),
        profile_requests_per_s=pr.requests_per_s,
    )
    report.row("4. reads", "events in the database", in_db, "events")
    report.row(
        "4. reads",
        f"{len(heavy)} customers with {heavy_events:,} events, {cfg.read_concurrency} in flight",
        None,
        "",
    )
    report.row(
        "4. reads",
        "timeline (first page) p50",
        tl.percentile_ms(50),
        "ms",
        reference=tl.percentile_ms(99),
        reference_label="p99",
    )
    cpu_rows(report, "4. reads", "timeline", timeline_cpu)
    report.row(
        "4. reads",
        "profile p50",
        pr.percentile_ms(50),
        "ms",
        reference=pr.percentile_ms(99),
        reference_label="p99",
    )
    if in_db < 2_000_000:
        report.note(f"reads: measured with {in_db:,} events in the database (target 2,000,000)")


async def _fill(conn: Any, run: Run, target: int, uuid_fn: str) -> None:
    """Grow ``events`` to ``target`` rows with time-shifted copies of the pipeline's rows."""
    stack = run.stack
    base = await conn.fetchval("SELECT count(*) FROM events WHERE source_id = $1", stack.source_id)
    current = await conn.fetchval("SELECT count(*) FROM events")
    round_ = 0
    while current < target and base:
        round_ += 1
        want = min(base, target - current)
        status = await conn.execute(
            copies(
                event_id=uuid_fn,
                source_id="$2",
                message_id="'fill-' || $3::int::text || '-' || message_id",
                occurred_at="occurred_at - $3::int * interval '30 days'",
                received_at="received_at - $3::int * interval '30 days'",
            )
            + " WHERE source_id = $1 LIMIT $4",
            stack.source_id,
            stack.copy_source_id,
            round_,
            want,
        )
        current += int(status.rsplit(" ", 1)[-1])
        print(f"  reads: filled to {current:,} events", flush=True)


async def _heavy_customers(conn: Any, run: Run, count: int, events: int, uuid_fn: str) -> list[Any]:
    """``count`` customers topped up to ``events`` events each, spread over the last year."""
    stack = run.stack
    ids = [
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM customers WHERE merged_into IS NULL"
            " ORDER BY event_count DESC, id LIMIT $1",
            count,
        )
    ]
    base = await conn.fetchval("SELECT count(*) FROM events WHERE source_id = $1", stack.source_id)
    for k, cid in enumerate(ids):
        have = await conn.fetchval("SELECT count(*) FROM events WHERE customer_id = $1", cid)
        want = max(0, events - have)
        offset = (k * events) % max(1, base - want) if base > want else 0
        await conn.execute(
            copies(
                event_id=uuid_fn,
                source_id="$2",
                message_id="'heavy-' || $3::uuid::text || '-' || message_id",
                customer_id="$3::uuid",
                occurred_at="now() - random() * interval '365 days'",
            )
            + " WHERE source_id = $1 ORDER BY event_id LIMIT $4 OFFSET $5",
            stack.source_id,
            stack.copy_source_id,
            cid,
            want,
            offset,
        )
        await conn.execute(
            "UPDATE customers SET event_count = (SELECT count(*) FROM events"
            " WHERE customer_id = $1) WHERE id = $1",
            cid,
        )
    return ids


async def _has_function(conn: Any, name: str) -> bool:
    return bool(
        await conn.fetchval("SELECT exists(SELECT 1 FROM pg_proc WHERE proname = $1)", name)
    )
