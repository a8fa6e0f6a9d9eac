"""The pipeline's batch transaction alone: ``python -m bench.handler [--events N]``.

Builds the benchmark workload's events into canonical touchpoints (as the API would), then
times `BatchHandler.handle` on batches of ``--batch`` records — no broker, no HTTP — on a
fresh scratch database, next to a raw COPY of the same number of rows into ``events``. The
quickest loop for profiling the consumer (``py-spy record -- python -m bench.handler``).

Records arrive in send order, or with ``--partitions N`` in the order a consumer catching up
on a full topic gets them: spread over N partitions by the API's key, then ``--chunk``
records of each partition in turn. A person's events on other partitions then arrive late,
as in the bench's pipeline phase.

Needs ``PERCORSO_DATABASE_URL`` (or ``PERCORSO_TEST_DATABASE_URL``): a server on which it may
create and drop a database.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime

from app.auth.service import SourceInfo
from app.config import Settings
from app.db import create_pool
from app.identity.identifiers import IdentityConfig
from app.identity.policy import MergePolicy
from app.ingest.publisher import partition_for
from app.ingest.service import build_all, partition_key
from app.journey.model import load_model
from app.kit import gc
from app.pipeline.handler import BatchHandler, Record
from app.touchpoint import Touchpoint
from bench.config import EVENTS_PER_PERSON
from bench.phases import copy_again
from bench.scratch import scratch_database
from bench.workload import generate


async def main(events: int, batch: int, partitions: int, chunk: int) -> None:
    async with scratch_database("percorso_handler") as url:
        await _run(Settings(database_url=url), events, batch, partitions, chunk)


def catch_up_order(touchpoints: list[Touchpoint], partitions: int, chunk: int) -> list[Touchpoint]:
    """`touchpoints` as a consumer of a full topic reads them: ``chunk`` of each partition's
    records in turn."""
    queues: list[list[Touchpoint]] = [[] for _ in range(partitions)]
    for tp in touchpoints:
        queues[partition_for(partition_key(tp), partitions)].append(tp)
    ordered = []
    for start in range(0, max(map(len, queues)), chunk):
        for queue in queues:
            ordered += queue[start : start + chunk]
    return ordered


async def _run(settings: Settings, events: int, batch: int, partitions: int, chunk: int) -> None:
    pool = await create_pool(settings, size=2)
    source_id, copy_source_id = uuid.uuid4(), uuid.uuid4()
    for sid, name in ((source_id, "bench"), (copy_source_id, "bench-copy")):
        await pool.execute(
            "INSERT INTO sources (id, name, channel, write_key_hash, write_key_prefix)"
            " VALUES ($1, $2, 'web', $3, 'pw_')",
            sid,
            name,
            uuid.uuid4().hex,
        )
    workload = generate(events, max(1, events // EVENTS_PER_PERSON), seed=7)
    source = SourceInfo(source_id, "bench", "web", {})
    touchpoints, _ = build_all(
        [e for b in workload.batches(batch) for e in b],
        call_type=None,
        source=source,
        received_at=datetime.now(UTC),
        identity=IdentityConfig(),
        request_context={},
    )
    if partitions > 1:
        touchpoints = catch_up_order(touchpoints, partitions, chunk)
    records = [Record("touchpoints", 0, n, None, tp.to_bytes()) for n, tp in enumerate(touchpoints)]
    # As in the consumer, only the batch in hand is alive as objects: keeping every
    # touchpoint would make each garbage collection walk all of them.
    del touchpoints, workload
    collector = gc.BetweenBatches()  # as in the consumer
    collector.start()
    handler = BatchHandler(pool, load_model(settings.journey_model), MergePolicy())
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        await handler.handle(records[i : i + batch])
        collector.after_batch()
    elapsed = time.perf_counter() - started
    stored = await pool.fetchval("SELECT count(*) FROM events")
    async with pool.acquire() as conn:
        copied, seconds = await copy_again(conn, source_id, copy_source_id)
    copy_rate = copied / seconds
    await pool.close()
    rate = stored / elapsed
    print(f"handler  {stored:>8,} events in {elapsed:6.2f} s  {rate:>9,.0f} events/s")
    print(f"raw COPY {len(records):>8,} rows                {copy_rate:>9,.0f} rows/s")
    print(f"ratio    {rate / copy_rate:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=1, help="catch-up order (see above)")
    parser.add_argument("--chunk", type=int, default=5_000, help="records per partition turn")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.batch, args.partitions, args.chunk))
