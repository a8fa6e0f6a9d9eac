"""``python -m bench.ab NAME=DIR[,KEY=VALUE...] NAME=DIR... [--bare | --handler | --pipeline]``:
versions or settings of Percorso side by side under the same load, in rounds that take
turns: the API under ``/v1/batch`` requests, the consumer's batch handling alone
(``--handler``), or the consumer on a topic the API filled (``--pipeline``).

On a virtual machine the same code runs tens of percent faster or slower from one minute to
the next, so two ``make bench`` runs rarely show a change of a few percent. Here every
variant gets the same load in each round, in turns (first to last, then last to first), so
the drift reaches all of them alike, and the spread of the rounds shows how far to trust a
difference.

A variant is a checkout of the version to measure (``git worktree add /tmp/before
HEAD~1``; ``.`` for this one), with the stack's settings and any ``KEY=VALUE`` given
(``PERCORSO_KAFKA_COMPRESSION_TYPE=none``). Each mode prints, per variant, the median over
its rounds and the ratio to the first variant's, and every round's events/s:

* the API (default): every variant's ``python -m app.cli api`` runs on one stack (one
  database, migrated by this checkout), and each round sends each the same fresh
  ``/v1/batch`` requests (new people each round); no consumer runs. It prints events/s,
  the CPU an API process used per request (its uvicorn workers included) and latency
  p50/p99 over all rounds. ``--bare`` adds the bare endpoint (:mod:`bench.bare_app`), the
  limit ``make bench`` compares ``/v1/batch`` with;
* ``--handler``: each round runs ``python -m bench.handler --json --events N`` in each
  checkout (a scratch database each time, on the server of ``PERCORSO_DATABASE_URL``,
  migrated by that checkout). It prints events/s, the CPU an event cost the handler's
  process, its decode workers and PostgreSQL, and the ratio to each run's raw COPY;
* ``--pipeline``: this checkout's API fills a topic with N events once; each round starts
  each variant's consumer (``python -m app.cli consume`` in its checkout, a consumer group of
  its own) on a fresh database migrated by that checkout, and times it from its first batch
  until every event is handled, as ``make bench``'s pipeline phase does. It prints events/s
  and the CPU an event cost the consumer (with its decode workers) and, for the embedded
  PostgreSQL, the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import uvloop

from app.config import Settings
from app.kit import embedded
from bench import loadgen, phases, workload
from bench.config import EVENTS_PER_PERSON
from bench.loadgen import LoadResult
from bench.stack import MB, Proc, Stack

BARE = "bare"


@dataclass(frozen=True)
class Variant:
    name: str
    directory: Path
    env: dict[str, str] = field(default_factory=dict)


def parse_variant(text: str) -> Variant:
    """``NAME=DIR[,KEY=VALUE...]``: a checkout of Percorso and settings for its API."""
    name, _, rest = text.partition("=")
    directory, *settings = rest.split(",")
    if not name or not directory:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIR[,KEY=VALUE...]")
    if name == BARE:
        raise argparse.ArgumentTypeError(f"{BARE!r} is the bare endpoint's name (--bare)")
    env: dict[str, str] = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key.startswith("PERCORSO_"):
            raise argparse.ArgumentTypeError(f"{setting!r}: expected PERCORSO_...=VALUE")
        env[key] = value
    path = Path(directory).resolve()
    if not (path / "app" / "cli.py").is_file():
        raise argparse.ArgumentTypeError(f"{directory}: not a Percorso checkout (no app/cli.py)")
    return Variant(name, path, env)


@dataclass
class Measured:
    """One variant's rounds: each round's load and the CPU its server used meanwhile."""

    rounds: list[LoadResult] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    def add(self, result: LoadResult, cpu_seconds: float) -> None:
        self.rounds.append(result)
        self.cpu_seconds.append(cpu_seconds)

    def median_events_per_s(self) -> float:
        return statistics.median(r.events_per_s for r in self.rounds)

    def median_cpu_ms_per_request(self) -> float:
        return statistics.median(
            1000 * cpu / r.requests for r, cpu in zip(self.rounds, self.cpu_seconds, strict=True)
        )

    def total(self) -> LoadResult:
        total = LoadResult()
        for result in self.rounds:
            total.add(result)
        return total


def _run_names() -> tuple[str, Path]:
    """A run's id and its directory of logs."""
    run_id = "ab" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return run_id, Settings().data_dir / "bench" / run_id


def _bodies(args: argparse.Namespace, work: workload.Workload, write_key: str) -> list[bytes]:
    """``/v1/batch`` bodies of ``work``; with ``--write-key-in-calls``, each call carries the
    write key, as analytics.js's batches do."""
    fields = {"writeKey": write_key} if args.write_key_in_calls else {}
    return work.batch_bodies(args.batch_size, **fields)


def _workload(args: argparse.Namespace, *, seed: int, prefix: str) -> workload.Workload:
    """``--events`` events of the bench's workload."""
    people = max(1, args.events // EVENTS_PER_PERSON)
    return workload.generate(args.events, people, seed=seed, prefix=prefix)


def _write_headers(stack: Stack) -> dict[str, str]:
    basic = base64.b64encode(f"{stack.write_key}:".encode()).decode()
    return {"authorization": f"Basic {basic}"}


def summary(measured: dict[str, Measured]) -> list[str]:
    """A line per variant; ratios are against the first one's median."""
    first = next(iter(measured.values())).median_events_per_s()
    lines = []
    for name, m in measured.items():
        total, median = m.total(), m.median_events_per_s()
        rounds = " ".join(f"{r.events_per_s:,.0f}" for r in m.rounds)
        lines.append(
            f"{name:>10}  {median:>9,.0f} events/s (x{median / first:.2f})"
            f"  CPU {m.median_cpu_ms_per_request():.3f} ms/request"
            f"  p50/p99 {total.percentile_ms(50) or 0:.1f}/{total.percentile_ms(99) or 0:.1f} ms"
            f"  errors {total.errors}  rounds: {rounds}"
        )
    return lines


async def run(args: argparse.Namespace) -> dict[str, Measured]:
    warm = workload.generate(args.batch_size * 20, 50, seed=args.seed + 1, prefix="warmup")
    stack = Stack(*_run_names(), partitions=args.partitions)
    async with stack:
        servers: dict[str, Proc] = {}
        for variant in args.variants:
            servers[variant.name] = await stack.start_api(
                args.workers, variant.directory, variant.env, role=f"api-{variant.name}"
            )
        if args.bare:
            servers[BARE] = await stack.start_bare(args.workers)
        measured = {name: Measured() for name in servers}
        async with loadgen.session(args.concurrency, _write_headers(stack)) as http:
            for proc in servers.values():
                url = f"http://127.0.0.1:{proc.port}/v1/batch"
                targets = [(url, b) for b in _bodies(args, warm, stack.write_key)]
                await loadgen.closed_loop(http, targets, args.batch_size, 2)
            for i in range(args.rounds):
                # Fresh people each round, as in a real load: none of the API's caches
                # (an identifier's verdict, say) knows them yet.
                work = _workload(args, seed=args.seed + i, prefix=f"r{i}")
                bodies = _bodies(args, work, stack.write_key)
                for name in list(servers) if i % 2 == 0 else list(servers)[::-1]:
                    proc = servers[name]
                    url = f"http://127.0.0.1:{proc.port}/v1/batch"
                    before = proc.cpu_seconds()
                    result = await loadgen.closed_loop(
                        http, [(url, b) for b in bodies], args.batch_size, args.concurrency
                    )
                    measured[name].add(result, proc.cpu_seconds() - before)
    return measured


async def handler(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Each variant's ``bench.handler --json`` numbers, a run per round."""
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in args.variants}
    for i in range(args.rounds):
        for variant in _turn(args.variants, i):
            runs[variant.name].append(await _handler_run(variant, args))
    return runs


def _turn(variants: list[Variant], i: int) -> list[Variant]:
    """The variants in round ``i``'s order: first to last, then last to first."""
    return variants if i % 2 == 0 else variants[::-1]


async def pipeline(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Each variant's consumer on the same topic, filled once by this checkout's API."""
    stack = Stack(*_run_names(), partitions=args.partitions)
    async with stack:
        events = await _fill(stack, args)
        runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in args.variants}
        for i in range(args.rounds):
            for variant in _turn(args.variants, i):
                index = sum(map(len, runs.values()))
                runs[variant.name].append(await _consume(stack, variant, events, index, args))
    return runs


async def _fill(stack: Stack, args: argparse.Namespace) -> int:
    """Events the API accepted into the stack's topic."""
    api = await stack.start_api(args.workers)
    bodies = _bodies(args, _workload(args, seed=args.seed, prefix="bench"), stack.write_key)
    url = f"http://127.0.0.1:{api.port}/v1/batch"
    async with loadgen.session(args.concurrency, _write_headers(stack)) as http:
        result = await loadgen.closed_loop(
            http, [(url, b) for b in bodies], args.batch_size, args.concurrency
        )
    stack.stop(api)
    if result.errors:
        raise RuntimeError(f"filling the topic: {result.errors} requests failed {result.statuses}")
    return result.events


async def _consume(
    stack: Stack, variant: Variant, events: int, index: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One run of ``variant``'s consumer over the whole topic, on a database of its own;
    ``index`` numbers the runs."""
    tag = f"run{index}"
    database = f"{stack.database}_{tag}"
    await embedded.ensure_database(stack.admin_url, database)
    url = embedded.with_database(stack.admin_url, database)
    try:
        await _migrate(variant, url)
        await _copy_sources(stack, url)
        env = {
            "PERCORSO_DATABASE_URL": url,
            "PERCORSO_KAFKA_CONSUMER_GROUP": f"ab-{stack.run_id}-{tag}",
            **variant.env,
        }
        consumer = stack.start_consumer(index, variant.directory, env)
        try:
            return await _time_consumer(stack, consumer, events, args.timeout)
        finally:
            stack.stop(consumer)
    finally:
        await embedded.drop_database(stack.admin_url, database)


async def _time_consumer(
    stack: Stack, consumer: Proc, events: int, timeout_s: float
) -> dict[str, Any]:
    """From the start of the consumer's first batch until it handled ``events``, as ``make
    bench`` times its pipeline phase: events/s, the CPU per event the consumer and the
    embedded server used meanwhile (sampled as it runs: the first batch's start is known
    only once that batch is done), and the consumer's peak RSS (sampled as it runs)."""
    started = time.perf_counter()
    samples: list[tuple[float, float, float | None]] = []  # (when, consumer, server)
    first: float | None = None
    async with aiohttp.ClientSession() as http:
        while True:
            now = time.perf_counter()
            samples.append((now, consumer.cpu_seconds(), stack.postgres_cpu_seconds()))
            consumer.sample()
            done = await phases.handled(http, [consumer])
            if first is None and done > 0:
                # The first batch is done: back from now by the time it took.
                first = await phases.first_batch_started([consumer], now)
            if done >= events:
                break
            if now - started > timeout_s:
                raise RuntimeError(
                    f"{consumer.role}: {done} of {events} events after {timeout_s:.0f} s\n"
                    + consumer.log_tail()
                )
            await asyncio.sleep(0.1)
    finished = time.perf_counter()
    assert first is not None
    _, consumer_at, server_at = max((s for s in samples if s[0] <= first), default=samples[0])
    cpu = {"consumer": 1e6 * (consumer.cpu_seconds() - consumer_at) / done}
    server = stack.postgres_cpu_seconds()
    if server is not None and server_at is not None:
        cpu["postgres"] = 1e6 * (server - server_at) / done
    return {
        "events_per_s": done / (finished - first),
        "cpu_us_per_event": cpu,
        "rss_mb_peak": consumer.peak_rss / MB,
    }


async def _migrate(variant: Variant, url: str) -> None:
    """Migrate the database at ``url`` with ``variant``'s own migrations."""
    code = "import sys; from app.migrate import upgrade; upgrade(sys.argv[1])"
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, url, cwd=variant.directory, stderr=asyncio.subprocess.PIPE
    )
    _, err = await migrate.communicate()
    if migrate.returncode != 0:
        raise RuntimeError(
            f"{variant.name}: migrating failed\n{err.decode(errors='replace')[-2000:]}"
        )


async def _copy_sources(stack: Stack, url: str) -> None:
    """The stack's sources, into the database at ``url`` (its events name them)."""
    source = await stack.connect()
    try:
        rows = await source.fetch(
            "SELECT id, name, channel, write_key_hash, write_key_prefix FROM sources"
        )
    finally:
        await source.close()
    target = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await target.executemany(
            "INSERT INTO sources (id, name, channel, write_key_hash, write_key_prefix)"
            " VALUES ($1, $2, $3, $4, $5)",
            [tuple(r) for r in rows],
        )
    finally:
        await target.close()


async def _handler_run(variant: Variant, args: argparse.Namespace) -> dict[str, Any]:
    command = ["-m", "bench.handler", "--json", "--events", str(args.events)]
    command += ["--partitions", str(args.partitions)]
    handler = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        cwd=variant.directory,
        env={**os.environ, **variant.env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await handler.communicate()
    if handler.returncode != 0:
        raise RuntimeError(
            f"{variant.name}: bench.handler exited with {handler.returncode}\n"
            + err.decode(errors="replace")[-2000:]
        )
    numbers: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return numbers


def runs_summary(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A line per variant of ``--handler`` or ``--pipeline`` runs: medians over its runs;
    ratios are against the first variant's."""
    first = statistics.median(r["events_per_s"] for r in next(iter(runs.values())))
    lines = []
    for name, numbers in runs.items():
        median = statistics.median(r["events_per_s"] for r in numbers)
        cpu = {
            process: statistics.median(r["cpu_us_per_event"].get(process, 0.0) for r in numbers)
            for process in numbers[0]["cpu_us_per_event"]
        }
        line = (
            f"{name:>10}  {median:>7,.0f} events/s (x{median / first:.2f})"
            f"  CPU µs/event: {', '.join(f'{k} {v:.0f}' for k, v in cpu.items())}"
        )
        if "raw_copy_rows_per_s" in numbers[0]:
            copy = statistics.median(r["events_per_s"] / r["raw_copy_rows_per_s"] for r in numbers)
            line += f"  of raw COPY {copy:.2f}"
        if "rss_mb_peak" in numbers[0]:
            line += f"  peak RSS {statistics.median(r['rss_mb_peak'] for r in numbers):.0f} MB"
        lines.append(line + "  rounds: " + " ".join(f"{r['events_per_s']:,.0f}" for r in numbers))
    return lines


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="+", type=parse_variant, metavar="NAME=DIR[,K=V...]")
    parser.add_argument("--bare", action="store_true", help="add the bare endpoint")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--handler", action="store_true", help="bench.handler in each checkout")
    mode.add_argument(
        "--pipeline", action="store_true", help="each checkout's consumer on a filled topic"
    )
    parser.add_argument("--rounds", type=int, default=6)
    # A round of a second or more: CPU times count in ticks of 10 ms.
    parser.add_argument(
        "--events", type=int, default=100_000, help="events each variant gets in each round"
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--write-key-in-calls",
        action="store_true",
        help="each call carries the write key, as analytics.js's batches (10 calls) do",
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="HTTP workers of each server")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds a --pipeline run may take"
    )
    args = parser.parse_args(argv)
    names = [v.name for v in args.variants]
    if len(set(names)) != len(names):
        parser.error("variant names must differ")
    if args.bare and (args.handler or args.pipeline):
        parser.error("--bare is for the API's load")
    if args.rounds < 1 or args.events < args.batch_size:
        parser.error("a round needs a request at least: --rounds >= 1, --events >= batch size")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.handler or args.pipeline:
        runs = uvloop.run(handler(args) if args.handler else pipeline(args))
        print("\n".join(runs_summary(runs)))
    else:
        print("\n".join(summary(uvloop.run(run(args)))))


if __name__ == "__main__":
    main(sys.argv[1:])
