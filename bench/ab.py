"""``python -m bench.ab NAME=DIR[,KEY=VALUE...] NAME=DIR... [--bare | --pipeline]``: versions
or settings of Percorso side by side under the same load, in rounds that take turns: the
API under ``/v1/batch`` requests, or (``--pipeline``) the consumer's batch handling.

On a virtual machine the same code runs tens of percent faster or slower from one minute to
the next, so two ``make bench`` runs rarely show a change of a few percent. Here every
variant gets the same requests in each round (new people each round), in turns (first to
last, then last to first), so the drift reaches all of them alike, and the spread of the
rounds shows how far to trust a difference.

A variant is ``python -m app.cli api`` run in DIR: a checkout of the version to measure
(``git worktree add /tmp/before HEAD~1``; ``.`` for this one), with the stack's settings and
any ``KEY=VALUE`` given (``PERCORSO_KAFKA_COMPRESSION_TYPE=none``). The variants share the
database, migrated by this checkout, so they must share its schema. ``--bare`` adds the
bare endpoint (:mod:`bench.bare_app`), the limit ``make bench`` compares ``/v1/batch``
with. No consumer runs: the broker only collects.

Per variant it prints events/s of each round and their median, the median CPU an API
process used per request (its uvicorn workers included), latency p50/p99 over all rounds,
and the ratio of its median events/s to the first variant's.

With ``--pipeline``, the consumer's side instead: each round runs ``python -m bench.handler
--events N --json`` in each variant's checkout, in turns (a scratch database each time, on
the server of ``PERCORSO_DATABASE_URL``, migrated by that checkout), and it prints events/s
of each round and their median, the medians of the CPU an event cost the handler's process,
its decode workers and PostgreSQL, and of the ratio to each run's raw COPY.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop

from app.config import Settings
from bench import loadgen, workload
from bench.config import EVENTS_PER_PERSON
from bench.loadgen import LoadResult
from bench.stack import Proc, Stack

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
    people = max(1, args.events // EVENTS_PER_PERSON)
    warm = workload.generate(args.batch_size * 20, 50, seed=args.seed + 1, prefix="warmup")
    run_id = "ab" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    stack = Stack(run_id, Settings().data_dir / "bench" / run_id, partitions=args.partitions)
    async with stack:
        servers: dict[str, Proc] = {}
        for variant in args.variants:
            servers[variant.name] = await stack.start_api(
                args.workers, variant.directory, variant.env, role=f"api-{variant.name}"
            )
        if args.bare:
            servers[BARE] = await stack.start_bare(args.workers)
        basic = base64.b64encode(f"{stack.write_key}:".encode()).decode()
        headers = {"authorization": f"Basic {basic}"}
        measured = {name: Measured() for name in servers}
        async with loadgen.session(args.concurrency, headers) as http:
            for proc in servers.values():
                url = f"http://127.0.0.1:{proc.port}/v1/batch"
                targets = [(url, b) for b in warm.batch_bodies(args.batch_size)]
                await loadgen.closed_loop(http, targets, args.batch_size, 2)
            for i in range(args.rounds):
                # Fresh people each round, as in a real load: none of the API's caches
                # (an identifier's verdict, say) knows them yet.
                work = workload.generate(args.events, people, seed=args.seed + i, prefix=f"r{i}")
                bodies = work.batch_bodies(args.batch_size)
                for name in list(servers) if i % 2 == 0 else list(servers)[::-1]:
                    proc = servers[name]
                    url = f"http://127.0.0.1:{proc.port}/v1/batch"
                    before = proc.cpu_seconds()
                    result = await loadgen.closed_loop(
                        http, [(url, b) for b in bodies], args.batch_size, args.concurrency
                    )
                    measured[name].add(result, proc.cpu_seconds() - before)
    return measured


async def pipeline(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Each variant's ``bench.handler --json`` numbers, a run per round."""
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in args.variants}
    for i in range(args.rounds):
        for variant in args.variants if i % 2 == 0 else args.variants[::-1]:
            runs[variant.name].append(await _handler_run(variant, args))
    return runs


async def _handler_run(variant: Variant, args: argparse.Namespace) -> dict[str, Any]:
    command = ["-m", "bench.handler", "--json", "--events", str(args.events)]
    handler = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        "--partitions",
        str(args.partitions),
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


def pipeline_summary(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A line per variant: medians over its runs; ratios are against the first one's."""
    first = statistics.median(r["events_per_s"] for r in next(iter(runs.values())))
    lines = []
    for name, numbers in runs.items():
        median = statistics.median(r["events_per_s"] for r in numbers)
        cpu = {
            process: statistics.median(r["cpu_us_per_event"].get(process, 0.0) for r in numbers)
            for process in numbers[0]["cpu_us_per_event"]
        }
        of_copy = statistics.median(r["events_per_s"] / r["raw_copy_rows_per_s"] for r in numbers)
        rounds = " ".join(f"{r['events_per_s']:,.0f}" for r in numbers)
        lines.append(
            f"{name:>10}  {median:>7,.0f} events/s (x{median / first:.2f})"
            f"  CPU µs/event: {', '.join(f'{k} {v:.0f}' for k, v in cpu.items())}"
            f"  of raw COPY {of_copy:.2f}  rounds: {rounds}"
        )
    return lines


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="+", type=parse_variant, metavar="NAME=DIR[,K=V...]")
    parser.add_argument("--bare", action="store_true", help="add the bare endpoint")
    parser.add_argument(
        "--pipeline", action="store_true", help="bench.handler in each checkout instead"
    )
    parser.add_argument("--rounds", type=int, default=6)
    # A round of a second or more: CPU times count in ticks of 10 ms.
    parser.add_argument(
        "--events", type=int, default=100_000, help="events each variant gets in each round"
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="HTTP workers of each server")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    names = [v.name for v in args.variants]
    if len(set(names)) != len(names):
        parser.error("variant names must differ")
    if args.pipeline and args.bare:
        parser.error("--bare is for the API's load, not --pipeline")
    if args.rounds < 1 or args.events < args.batch_size:
        parser.error("a round needs a request at least: --rounds >= 1, --events >= batch size")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.pipeline:
        print("\n".join(pipeline_summary(uvloop.run(pipeline(args)))))
    else:
        print("\n".join(summary(uvloop.run(run(args)))))


if __name__ == "__main__":
    main(sys.argv[1:])
