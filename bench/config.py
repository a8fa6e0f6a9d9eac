"""What a bench run does: sizes of each phase, full and quick presets."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

# The workload: 200,000 events over 20,000 people.
EVENTS_PER_PERSON = 10


@dataclass(frozen=True, slots=True)
class BenchConfig:
    quick: bool = False
    # Workload: Segment batch items over people (events / EVENTS_PER_PERSON by default).
    events: int = 200_000
    customers: int = 0
    seed: int = 42
    batch_size: int = 100
    concurrency: int = 32
    # /v1/batch is sent to the API and to the bare server in this many alternating rounds
    # (fewer when rounds would be short), so that both meet the machine's drift alike.
    ingest_rounds: int = 4
    # HTTP worker processes of the API and, so the two compare like with like, the bare server.
    workers: int = 1
    # Single /v1/track calls (latency and requests/s).
    track_requests: int = 5_000
    track_concurrency: int = 32
    # Issue 6's latency target is at a steady 1,000 requests/s (an open loop).
    track_rate_per_s: float = 1_000.0
    # Pipeline.
    consumers: int = 1
    partitions: int = 6
    pipeline_timeout_s: float = 600.0
    # Freshness: a steady open-loop load while the pipeline runs.
    freshness_events_per_s: int = 2_000
    freshness_batch: int = 20
    freshness_seconds: float = 30.0
    # Reads: the database is filled to this many events (server-side copies of the
    # pipeline's rows), and `heavy_customers` get `heavy_events` each.
    read_db_events: int = 2_000_000
    heavy_customers: int = 10
    heavy_events: int = 10_000
    read_requests: int = 2_000
    read_concurrency: int = 8
    # Phases that can be skipped.
    freshness: bool = True
    reads: bool = True
    bare: bool = True
    profile: bool = False

    @property
    def people(self) -> int:
        return self.customers or max(1, self.events // EVENTS_PER_PERSON)


QUICK = {
    "events": 20_000,
    "track_requests": 1_000,
    "freshness_seconds": 10.0,
    # A small fill, so the quick run goes through every step of the full one.
    "read_db_events": 100_000,
    "heavy_customers": 3,
    "read_requests": 500,
    "pipeline_timeout_s": 150.0,
}


def parse(argv: list[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Percorso benchmark: ingest, pipeline vs raw COPY, freshness, reads, memory.",
    )
    parser.add_argument("--quick", action="store_true", help="small run (well under 3 minutes)")
    parser.add_argument("--events", type=int, help="events pushed through /v1/batch")
    parser.add_argument("--customers", type=int, help="people in the workload (default events/10)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--concurrency", type=int, help="requests in flight (batch ingest)")
    parser.add_argument(
        "--ingest-rounds", type=int, help="alternating API/bare rounds of batch ingest"
    )
    parser.add_argument("--track-requests", type=int)
    parser.add_argument("--workers", type=int, help="HTTP worker processes (API and bare)")
    parser.add_argument("--consumers", type=int, help="pipeline consumer processes")
    parser.add_argument("--partitions", type=int)
    parser.add_argument("--freshness-seconds", type=float)
    parser.add_argument("--freshness-events-per-s", type=int)
    parser.add_argument("--read-db-events", type=int, help="fill the database to this size")
    parser.add_argument("--read-requests", type=int, help="timeline and profile requests each")
    parser.add_argument("--no-freshness", dest="freshness", action="store_false", default=None)
    parser.add_argument("--no-reads", dest="reads", action="store_false", default=None)
    parser.add_argument("--no-bare", dest="bare", action="store_false", default=None)
    parser.add_argument(
        "--profile",
        action="store_true",
        default=None,
        help="py-spy the API (batch ingest, timeline reads) and the consumer (pipeline);"
        " skews the numbers",
    )
    args = vars(parser.parse_args(argv))
    config = BenchConfig(quick=args.pop("quick"))
    if config.quick:
        config = replace(config, **QUICK)
    names = {f.name for f in fields(BenchConfig)}
    overrides = {k: v for k, v in args.items() if v is not None and k in names}
    return replace(config, **overrides)
