"""The pipeline's batch transaction alone: ``python -m bench.handler [--events N]``.

Turns the benchmark workload's ``/v1/batch`` requests (100 calls each) into the records the
API publishes for them (batch envelopes, one per partition per request; with
``--canonical``, one canonical touchpoint per event), then times the batch handler on
them — no broker, no HTTP — on a fresh scratch database, next to a raw COPY of as many rows
into ``events``. Envelopes are opened as the consumer opens them (``--decode-workers``
worker processes, by default ``PIPELINE_DECODE_WORKERS``; 0: in the handler's process), and
the handler takes the consumer's other settings from the environment as the consumer does.
The quickest loop for profiling the consumer (``py-spy record -- python -m bench.handler``);
with ``--instructions``, the instructions the handler's process executes per event instead
(`bench.callgrind`; a decode worker's are not counted: use ``--decode-workers 0`` to count
the envelopes' building).
It also prints the CPU each event cost the handler's process, its decode workers and, on a
server on this machine, PostgreSQL (all of the server's processes), and how many of the
machine's cores they kept busy together (``--json``: as a JSON line too, last, which
``bench.ab --handler`` reads). With ``--statements``, the server's own time per
statement (``pg_stat_statements``: the server must preload it), which the client cannot
measure: a statement's round trip also holds the time the event loop spent on the other
part's Python work.

Records arrive in the order a consumer catching up on a full topic of ``--partitions``
partitions gets them: ``--batch`` events a handler call, an equal share of each partition in
turn. A person's events on other partitions then arrive late, as in the bench's pipeline
phase.

Needs ``PERCORSO_DATABASE_URL`` (or ``PERCORSO_TEST_DATABASE_URL``): a server on which it may
create and drop a database.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import psutil
import uvloop

from app.auth.service import SourceInfo
from app.config import Settings
from app.db import create_pool
from app.identity.policy import MergePolicy
from app.ingest import envelope
from app.ingest.publisher import partition_for, partitions_for
from app.ingest.service import Arrival, build_messages
from app.journey.model import load_model
from app.kit import gc
from app.pipeline.handler import BatchHandler, Record
from app.pipeline.opener import EnvelopeOpener
from bench import callgrind
from bench.config import EVENTS_PER_PERSON
from bench.phases import copy_again
from bench.scratch import scratch_database
from bench.stack import cpu_seconds, server_cpu_seconds
from bench.workload import generate

REQUEST_CALLS = 100  # calls per /v1/batch request, as the bench's ingest phase sends them


async def main(args: argparse.Namespace) -> None:
    async with scratch_database("percorso_handler") as url:
        await _run(Settings(database_url=url), args)


def published(
    bodies: list[bytes], arrival: Arrival, partitions: int, canonical: bool
) -> list[list[tuple[bytes, int]]]:
    """Each partition's ``(message, events in it)``, in order, as the API publishes the
    requests ``bodies``."""
    topic: list[list[tuple[bytes, int]]] = [[] for _ in range(partitions)]
    for body in bodies:
        whole = envelope.decode_batch(body)
        assert whole is not None
        if canonical:
            calls = [orjson.loads(bytes(raw)) for raw in whole.batch]
            messages, rejected = build_messages(calls, call_type=None, **arrival)
            assert not rejected
            for key, value in messages:
                topic[partition_for(key, partitions)].append((value, 1))
            continue
        admitted = envelope.admitted(body, whole.batch, arrival)
        assert admitted is not None, "the workload's requests all go as envelopes"
        calls_in = Counter(partitions_for(admitted.keys, partitions))  # as seal places them
        for part, _, value in envelope.seal(*admitted, partitions, arrival):
            topic[part].append((value, calls_in[part]))
    return topic


def catch_up_order(topic: list[list[tuple[bytes, int]]], batch: int) -> list[list[Record]]:
    """The handler calls of a consumer catching up on ``topic``: about ``batch`` events each,
    an equal share of every partition in turn."""
    share = max(1, batch // len(topic))
    positions = [0] * len(topic)
    calls: list[list[Record]] = []
    while any(p < len(q) for p, q in zip(positions, topic, strict=True)):
        records = []
        for part, queue in enumerate(topic):
            taken = 0
            while positions[part] < len(queue) and taken < share:
                value, events = queue[positions[part]]
                records.append(Record("touchpoints", part, positions[part], None, value))
                positions[part] += 1
                taken += events
        calls.append(records)
    return calls


async def _run(settings: Settings, args: argparse.Namespace) -> None:
    pool = await create_pool(settings, size=settings.pipeline_batch_parts)
    source_id, copy_source_id = uuid.uuid4(), uuid.uuid4()
    for sid, name in ((source_id, "bench"), (copy_source_id, "bench-copy")):
        await pool.execute(
            "INSERT INTO sources (id, name, channel, write_key_hash, write_key_prefix)"
            " VALUES ($1, $2, 'web', $3, 'pw_')",
            sid,
            name,
            uuid.uuid4().hex,
        )
    if args.suppressions:
        # Identifiers none of the workload's events carry: the pipeline's check runs on a
        # list that is not empty, and drops nothing.
        await pool.execute(
            "INSERT INTO suppressions (digest, kind, reason)"
            " SELECT sha256(convert_to('email:nobody-' || n || '@bench.invalid', 'UTF8')),"
            " 'email', 'request' FROM generate_series(1, $1) AS n",
            args.suppressions,
        )
    workload = generate(args.events, max(1, args.events // EVENTS_PER_PERSON), seed=7)
    identity = settings.identity_config()
    arrival: Arrival = {
        "source": SourceInfo(source_id, "bench", "web", {}),
        "received_at": datetime.now(UTC),
        "identity": identity,
        "request_context": {"ip": "203.0.113.7", "userAgent": "bench"},
    }
    bodies = workload.batch_bodies(REQUEST_CALLS)
    topic = published(bodies, arrival, args.partitions, args.canonical)
    calls = catch_up_order(topic, args.batch)
    # As in the consumer, only the batch in hand is alive as objects: keeping every
    # touchpoint would make each garbage collection walk all of them.
    del topic, workload, bodies
    workers = (
        settings.pipeline_decode_workers if args.decode_workers is None else args.decode_workers
    )
    opener = EnvelopeOpener(identity, workers) if workers else None
    if opener is not None:
        await opener.open_all([])  # start the workers before the clock does
    collector = gc.BetweenBatches()  # as in the consumer
    collector.start()
    handler = BatchHandler(
        pool,
        load_model(settings.journey_model),
        MergePolicy(),
        settings.pipeline_batch_parts,
        identity,
        settings.pipeline_run_events,
        opener,
    )
    server = await _local_server(pool)
    statements = args.statements and await _reset_statements(pool)
    before = _cpu(server)
    started = time.perf_counter()
    with callgrind.counted("handler"):
        # As the consumer does: the next batch is begun (decoded) while the last run of the
        # one before is stored.
        pending = None
        for records in calls:
            following = await handler.begin(records)
            if pending is not None:
                await pending
                collector.after_batch(busy=True)
            pending = following
        if pending is not None:
            await pending
    # The backlog is stored. The caught-up consumer's full collection (after_batch()) comes
    # after that, outside make bench's pipeline time too, so it is not run here (it had
    # added 0.23 s to 12 s, for 200,000 events).
    elapsed = time.perf_counter() - started
    cpu = {k: v - before[k] for k, v in _cpu(server).items() if k in before}
    spent = await pool.fetch(_STATEMENTS) if statements else []
    if opener is not None:
        opener.close()
    if callgrind.active():  # under valgrind: the parent reports the count, not these timings
        await pool.close()
        return
    stored = await pool.fetchval("SELECT count(*) FROM events")
    async with pool.acquire() as conn:
        copied, seconds = await copy_again(conn, source_id, copy_source_id)
    copy_rate = copied / seconds
    await pool.close()
    rate = stored / elapsed
    print(f"handler  {stored:>8,} events in {elapsed:6.2f} s  {rate:>9,.0f} events/s")
    per_event = ", ".join(f"{k} {1e6 * v / stored:.0f}" for k, v in cpu.items())
    busy = sum(cpu.values()) / elapsed
    print(f"         CPU µs/event: {per_event}; {busy:.2f} cores busy")
    print(f"raw COPY {copied:>8,} rows                {copy_rate:>9,.0f} rows/s")
    print(f"ratio    {rate / copy_rate:.2f}")
    if spent:
        print(_statements_table(spent, stored))
    if args.json:  # the last line, for bench.ab --handler
        cpu_per_event = {k: 1e6 * v / stored for k, v in cpu.items()}
        numbers = {"events_per_s": rate, "raw_copy_rows_per_s": copy_rate}
        print(orjson.dumps({**numbers, "cpu_us_per_event": cpu_per_event}).decode())


async def _local_server(pool: asyncpg.Pool[Any]) -> psutil.Process | None:
    """The postmaster of the pool's server when it runs on this machine and its processes
    can be read, else None."""
    try:
        backend = psutil.Process(await pool.fetchval("SELECT pg_backend_pid()"))
        postmaster = backend.parent()
        if postmaster is None or not backend.name().startswith("postgres"):
            return None
        server_cpu_seconds(postmaster)
    except psutil.Error:
        return None
    return postmaster


def _cpu(server: psutil.Process | None) -> dict[str, float]:
    """CPU seconds so far of this process, its children (decode workers) and the server
    (when it is local)."""
    workers = cpu_seconds(psutil.Process().children(recursive=True))
    used = {"handler": time.process_time(), "decode workers": workers}
    if server is not None:
        with contextlib.suppress(psutil.Error):
            used["postgres"] = server_cpu_seconds(server)
    return used


async def _reset_statements(pool: asyncpg.Pool[Any]) -> bool:
    """Start counting the server's time per statement; False (with a hint) when the server
    does not preload ``pg_stat_statements``."""
    try:
        await pool.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await pool.execute("SELECT pg_stat_statements_reset()")
    except asyncpg.PostgresError as exc:
        print(f"--statements: {exc}; start the server with"
              " -c shared_preload_libraries=pg_stat_statements")  # fmt: skip
        return False
    return True


# The statements of this database, by the server's time in them.
_STATEMENTS = """
    SELECT total_exec_time, calls, rows, regexp_replace(query, '\\s+', ' ', 'g') AS query
    FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    ORDER BY total_exec_time DESC LIMIT 15
"""


def _statements_table(rows: list[asyncpg.Record], events: int) -> str:
    lines = ["server time  µs/event   calls     rows  statement"]
    for r in rows:
        seconds = r["total_exec_time"] / 1000
        lines.append(
            f"{seconds:9.2f} s {1e6 * seconds / events:9.1f} {r['calls']:7,} {r['rows']:8,}"
            f"  {r['query'][:90]}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=30_000, help="events per handler call")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--decode-workers", type=int, help="default: PIPELINE_DECODE_WORKERS, as the consumer"
    )
    parser.add_argument(
        "--canonical", action="store_true", help="one canonical touchpoint per event"
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="the server's time per statement (needs pg_stat_statements preloaded)",
    )
    parser.add_argument(
        "--suppressions",
        type=int,
        default=0,
        help="suppressed identifiers (none of the workload's) on the list before the run",
    )
    parser.add_argument("--json", action="store_true", help="the numbers as JSON, last")
    callgrind.add_option(parser)
    args = parser.parse_args()
    if not callgrind.wanted(args):
        uvloop.run(main(args))  # the consumer's event loop (app.cli)
    else:
        counts = callgrind.run("bench.handler")
        print(f"handler  {counts['handler'] / args.events:>12,.0f} instructions an event")
