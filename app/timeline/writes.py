"""Timeline writes for the pipeline (asyncpg, array-bound; the batch owns the transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson


@dataclass(slots=True)
class EventRow:
    event_id: uuid.UUID
    source_id: uuid.UUID
    message_id: str
    customer_id: uuid.UUID
    type: str
    event: str | None
    channel: str
    occurred_at: datetime
    sent_at: datetime | None
    received_at: datetime
    stage: str | None
    properties: dict[str, Any]
    traits: dict[str, Any]
    context: dict[str, Any]
    flags: list[str]


async def existing_keys(
    conn: asyncpg.Connection[Any], keys: Sequence[tuple[uuid.UUID, str]]
) -> set[tuple[uuid.UUID, str]]:
    """Which ``(source_id, message_id)`` pairs are already on a timeline."""
    if not keys:
        return set()
    rows = await conn.fetch(
        """
        SELECT e.source_id, e.message_id FROM events e
        JOIN unnest($1::uuid[], $2::text[]) AS k(source_id, message_id)
             USING (source_id, message_id)
        """,
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["source_id"], r["message_id"]) for r in rows}


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def insert_events(conn: asyncpg.Connection[Any], rows: Sequence[EventRow]) -> int:
    """Insert events; a ``(source_id, message_id)`` already stored is skipped. Returns the
    number inserted."""
    if not rows:
        return 0
    result = await conn.execute(
        """
        INSERT INTO events (event_id, source_id, message_id, customer_id, type, event, channel,
                            occurred_at, sent_at, received_at, stage,
                            properties, traits, context, flags)
        SELECT event_id, source_id, message_id, customer_id, type, event, channel,
               occurred_at, sent_at, received_at, stage,
               properties::jsonb, traits::jsonb, context::jsonb, flags::jsonb
        FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[],
                    $7::text[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
                    $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
             AS r(event_id, source_id, message_id, customer_id, type, event, channel,
                  occurred_at, sent_at, received_at, stage, properties, traits, context, flags)
        ON CONFLICT (source_id, message_id) DO NOTHING
        """,
        [r.event_id for r in rows],
        [r.source_id for r in rows],
        [r.message_id for r in rows],
        [r.customer_id for r in rows],
        [r.type for r in rows],
        [r.event for r in rows],
        [r.channel for r in rows],
        [r.occurred_at for r in rows],
        [r.sent_at for r in rows],
        [r.received_at for r in rows],
        [r.stage for r in rows],
        [_json(r.properties) for r in rows],
        [_json(r.traits) for r in rows],
        [_json(r.context) for r in rows],
        [_json(r.flags) for r in rows],
    )
    return int(result.rsplit(" ", 1)[-1])
