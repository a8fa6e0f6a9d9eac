"""SQL of the identity graph. Callers own the transaction; a statement takes a whole batch's
rows as one parameter (app.kit.bulk), so a batch costs a handful of round trips."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from app.kit import bulk
from app.touchpoint import EventKey

IdentKey = tuple[str, str]


_OWNERS = f"""
    SELECT i.kind, i.value, i.customer_id
    FROM identities i JOIN {bulk.rows_from("$1", "kind text, value text")} AS k USING (kind, value)
"""  # noqa: S608 (constant SQL: the keys are the parameter)


async def owners(
    conn: asyncpg.Connection[Any], keys: Sequence[IdentKey]
) -> dict[IdentKey, uuid.UUID]:
    if not keys:
        return {}
    found = await conn.fetch(_OWNERS, bulk.rows(keys))
    return {(r["kind"], r["value"]): r["customer_id"] for r in found}


async def lock_customers(
    conn: asyncpg.Connection[Any], ids: Iterable[uuid.UUID]
) -> list[asyncpg.Record]:
    """Lock customer rows in id order and return them, with what the journey step needs
    (its state, and the model and newest event it was computed from)."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    return await conn.fetch(
        """
        SELECT id, created_at, merged_into, journey_state, journey_model, journey_at,
               journey_event_id, first_seen_at, last_seen_at,
               event_count, channel_counts, traits, traits_at
        FROM customers WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
        """,
        wanted,
    )


async def identities_of(
    conn: asyncpg.Connection[Any], customer_ids: Sequence[uuid.UUID], kinds: Iterable[str]
) -> list[asyncpg.Record]:
    """The customers' identities of the given kinds."""
    if not customer_ids:
        return []
    return await conn.fetch(
        "SELECT customer_id, kind, value FROM identities"
        " WHERE customer_id = ANY($1::uuid[]) AND kind = ANY($2::text[])",
        list(customer_ids),
        sorted(kinds),
    )


_INSERT_IDENTITIES = f"""
    INSERT INTO identities (kind, value, customer_id)
    SELECT * FROM {bulk.rows_from("$1", "kind text, value text, customer_id uuid")} AS n
"""  # noqa: S608 (constant SQL: the rows are the parameter)


async def insert_identities(
    conn: asyncpg.Connection[Any], new: Sequence[tuple[str, str, uuid.UUID]]
) -> None:
    """Record new identities. An identity another transaction recorded first raises
    ``asyncpg.UniqueViolationError`` (on ``pk_identities``), once that transaction has
    committed. Pass them sorted, so concurrent inserts of overlapping identifiers wait for
    each other in one order. (A plain INSERT: ``ON CONFLICT DO NOTHING`` inserts
    speculatively, which cost Postgres a third more per row, and a conflict means a retry
    either way.)"""
    if new:
        await conn.execute(_INSERT_IDENTITIES, bulk.rows(new))


async def earliest_events(
    conn: asyncpg.Connection[Any], customer_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, EventKey]:
    """Each customer's first event in (occurred_at, event_id) order, if it has any (one
    index probe per customer)."""
    if not customer_ids:
        return {}
    rows = await conn.fetch(
        """
        SELECT c.id, e.occurred_at, e.event_id FROM unnest($1::uuid[]) AS c(id)
        CROSS JOIN LATERAL (
            SELECT occurred_at, event_id FROM events e WHERE e.customer_id = c.id
            ORDER BY occurred_at, event_id LIMIT 1
        ) e
        """,
        list(customer_ids),
    )
    return {r["id"]: (r["occurred_at"], r["event_id"]) for r in rows}


_MERGES = bulk.rows_from("$1", "loser uuid, survivor uuid, event_id uuid, identifiers jsonb")
_MERGE_IDENTITIES = f"""
    UPDATE identities i SET customer_id = m.survivor FROM {_MERGES} AS m
    WHERE i.customer_id = m.loser
"""  # noqa: S608 (constant SQL: the rows are the parameter)
_MERGE_EVENTS = f"""
    UPDATE events e SET customer_id = m.survivor FROM {_MERGES} AS m WHERE e.customer_id = m.loser
"""  # noqa: S608 (constant SQL: the rows are the parameter)
# The losers, and the customers merged into them before, which would otherwise point at a
# merged-away customer: every merged customer points at its survivor, one hop. The two sets
# are apart (a loser was live when locked), so each row is updated once. The latter are
# found by probing the partial index on merged_into for the losers (`= ANY`): joined on it
# alone, a planner without statistics expects each loser to have hundreds and reads the
# whole index (10 ms a statement with 50,000 merged customers, however few merges).
# Measured with statistics, 2,000 merges of losers with none: 42 against 37 ms.
_MERGE_CUSTOMERS = f"""
    WITH m AS {_MERGES},
    earlier AS (
        UPDATE customers c SET merged_into = m.survivor, updated_at = now()
        FROM m WHERE c.merged_into = m.loser
          AND c.merged_into = ANY(ARRAY(SELECT loser FROM m)) AND c.merged_into IS NOT NULL
    )
    UPDATE customers c
    SET merged_into = m.survivor, event_count = 0, channel_counts = '{{}}'::jsonb,
        updated_at = now()
    FROM m WHERE c.id = m.loser
"""  # noqa: S608 (constant SQL: the rows are the parameter)
_LOG_MERGES = f"""
    INSERT INTO merges (survivor_id, merged_id, event_id, identifiers)
    SELECT survivor, loser, event_id, identifiers FROM {_MERGES} AS m
"""  # noqa: S608 (constant SQL: the rows are the parameter)


async def merge_customers(
    conn: asyncpg.Connection[Any],
    merges: Sequence[tuple[uuid.UUID, uuid.UUID, uuid.UUID | None, orjson.Fragment]],
) -> None:
    """Apply merges ``(loser, survivor, event_id, identifiers as JSON)``: the loser's identities
    and events move to the survivor, the loser points at it and keeps no counts (its
    profile was folded into the survivor's by the caller), so do the customers merged into
    the loser before (no chains: a merged id is one hop from its survivor), and the merge is
    logged. ``survivor`` must be final (never itself a loser in ``merges``), and the losers
    locked and live. Those earlier customers' rows are updated without being locked first
    (only a merge of their survivor writes them, and it holds that survivor's lock)."""
    if not merges:
        return
    final = bulk.rows(merges)
    await conn.execute(_MERGE_IDENTITIES, final)
    await conn.execute(_MERGE_EVENTS, final)
    await conn.execute(_MERGE_CUSTOMERS, final)
    await conn.execute(_LOG_MERGES, final)
