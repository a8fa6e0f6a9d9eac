"""The pipeline's transactions plan index probes, and only for themselves."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import create_pool
from app.identity.policy import MergePolicy
from app.identity.repository import _MERGE_EVENTS
from app.journey.model import load_model
from app.pipeline.handler import _BESIDE_OTHERS, WRITERS_LOCK, BatchHandler, Record
from tests.factories import touchpoint


def _scans(plan: Any) -> set[str]:
    """The node types of a JSON plan, nested ones included."""
    found = {plan["Node Type"]}
    for child in plan.get("Plans", []):
        found |= _scans(child)
    return found


async def test_a_merge_probes_the_index_and_the_setting_ends_with_the_batch(
    settings: Settings, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    pool = await create_pool(settings, size=1)  # one connection: the batch's, reused below
    try:
        handler = BatchHandler(pool, load_model(settings.journey_model), MergePolicy())
        # A merge: the anonymous visitor's events move to the signed-up customer's.
        batches = [
            [touchpoint(source_id, anonymous_id="fresh-a", at=0)],
            [touchpoint(source_id, user_id="fresh-u", at=5)],
            [touchpoint(source_id, user_id="fresh-u", anonymous_id="fresh-a", at=10)],
        ]
        for i, batch in enumerate(batches):
            records = [Record(settings.kafka_topic, 0, i, None, tp.to_bytes()) for tp in batch]
            assert (await handler.handle(records)).stored == 1
        async with pool.acquire() as conn:
            # SET LOCAL: the connection goes back to the pool as it was.
            assert await conn.fetchval("SHOW enable_seqscan") == "on"
            # The merge's statement, as a pipeline transaction plans it, on tables that were
            # never analysed: an index probe per merged customer, not a table scan.
            merge = await conn.fetchrow("SELECT merged_id, survivor_id FROM merges")
            rows = orjson.dumps([[str(merge[0]), str(merge[1]), None, None]]).decode()
            async with conn.transaction():
                await conn.execute(_BESIDE_OTHERS, WRITERS_LOCK)
                plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {_MERGE_EVENTS}", rows)
                scans = _scans(orjson.loads(plan)[0]["Plan"])
            assert await conn.fetchval("SHOW enable_seqscan") == "on"
        assert "Seq Scan" not in scans, scans
    finally:
        await pool.close()
