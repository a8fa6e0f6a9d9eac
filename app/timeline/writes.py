"""Timeline writes for the pipeline (asyncpg: one-parameter bulk reads, see app.kit.bulk;
COPY; the batch owns the transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from app.kit import bulk
from app.touchpoint import Touchpoint

_KEYS = bulk.rows_from("$1", "source_id uuid, message_id text")
_EXISTING = f"""
    SELECT e.source_id, e.message_id FROM events e JOIN {_KEYS} AS k USING (source_id, message_id)
"""  # noqa: S608 (constant SQL: the keys are the parameter)


async def existing_keys(
    conn: asyncpg.Connection[Any], keys: Sequence[tuple[uuid.UUID, str]]
) -> set[tuple[uuid.UUID, str]]:
    """Which ``(source_id, message_id)`` pairs are already on a timeline."""
    if not keys:
        return set()
    found = await conn.fetch(_EXISTING, bulk.rows(keys))
    return {(r["source_id"], r["message_id"]) for r in found}


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# Stored by the pipeline; ``seq`` (the arrival order) comes from its sequence.
COLUMNS = (
    "event_id", "source_id", "message_id", "customer_id", "type", "event", "channel",
    "occurred_at", "sent_at", "received_at", "stage", "properties", "traits", "context", "flags",
)  # fmt: skip
# What a second copy of a stored event violates (its id and its source's message id are
# both unique; the id is checked first).
STORED_KEYS = frozenset({"pk_events", "uq_events_source_id_message_id"})


async def insert_events(
    conn: asyncpg.Connection[Any],
    touchpoints: Sequence[Touchpoint],
    customers: Sequence[uuid.UUID],
    stages: Sequence[str | None],
) -> None:
    """Store touchpoints on their customers' timelines, each with the stage it led to, with
    a binary COPY (a third cheaper than an array-bound INSERT). The caller has dropped the
    keys already stored (:func:`existing_keys`); one stored since raises
    ``asyncpg.UniqueViolationError`` on one of :data:`STORED_KEYS`."""
    if not touchpoints:
        return
    records = [
        (
            tp.event_id,
            tp.source_id,
            tp.message_id,
            customer,
            tp.type,
            tp.event,
            tp.channel.value,
            tp.occurred_at,
            tp.sent_at,
            tp.received_at,
            stage,
            _json(tp.properties),
            _json(tp.traits),
            _json(tp.context),
            _json(tp.flags),
        )
        for tp, customer, stage in zip(touchpoints, customers, stages, strict=True)
    ]
    await conn.copy_records_to_table("events", columns=COLUMNS, records=records)
