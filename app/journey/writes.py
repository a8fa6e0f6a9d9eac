"""SQL of the journey's write side (asyncpg, array-bound). The caller owns the transaction
and holds the row locks of every customer passed in (see `app.journey.service`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app.journey.model import JourneyState


@dataclass(slots=True)
class SavedJourney:
    """A customer's journey columns as they are written."""

    customer_id: uuid.UUID
    state: JourneyState
    model: str  # fingerprint of the model that computed it
    at: datetime | None  # the newest event applied, in (occurred_at, event_id) order
    event_id: uuid.UUID | None


@dataclass(slots=True)
class TransitionRow:
    customer_id: uuid.UUID
    from_stage: str | None
    to_stage: str
    entered_at: datetime
    event_id: uuid.UUID
    channel: str
    event: str | None
    rule_id: str | None
    exited_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Mark:
    """What a customer's stored journey was computed from."""

    model: str | None
    at: datetime | None
    event_id: uuid.UUID | None


async def save_states(conn: asyncpg.Connection[Any], saved: Sequence[SavedJourney]) -> None:
    """Write the journey columns of each customer, in one statement (ascending ids)."""
    if not saved:
        return
    rows = sorted(saved, key=lambda s: s.customer_id)
    await conn.execute(
        """
        UPDATE customers c
        SET current_stage = u.current_stage, furthest_stage = u.furthest_stage,
            journey_state = u.state::jsonb, journey_model = u.model,
            journey_at = u.at, journey_event_id = u.event_id
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                    $6::timestamptz[], $7::uuid[])
             AS u(id, current_stage, furthest_stage, state, model, at, event_id)
        WHERE c.id = u.id
        """,
        [s.customer_id for s in rows],
        [s.state.current_stage for s in rows],
        [s.state.furthest_stage for s in rows],
        [orjson.dumps(s.state.to_json()).decode() for s in rows],
        [s.model for s in rows],
        [s.at for s in rows],
        [s.event_id for s in rows],
    )


async def close_open_transitions(
    conn: asyncpg.Connection[Any], exits: Sequence[tuple[uuid.UUID, datetime]]
) -> None:
    """Set ``exited_at`` of each customer's open transition (if any), in one statement."""
    if not exits:
        return
    rows = sorted(exits)
    await conn.execute(
        """
        UPDATE stage_transitions t SET exited_at = u.exited_at
        FROM unnest($1::uuid[], $2::timestamptz[]) AS u(customer_id, exited_at)
        WHERE t.customer_id = u.customer_id AND t.exited_at IS NULL
        """,
        [r[0] for r in rows],
        [r[1] for r in rows],
    )


async def insert_transitions(conn: asyncpg.Connection[Any], rows: Sequence[TransitionRow]) -> None:
    if not rows:
        return
    await conn.execute(
        """
        INSERT INTO stage_transitions (customer_id, entered_at, event_id, from_stage, to_stage,
                                       exited_at, channel, event, rule_id)
        SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[],
                             $6::timestamptz[], $7::text[], $8::text[], $9::text[])
        """,
        [r.customer_id for r in rows],
        [r.entered_at for r in rows],
        [r.event_id for r in rows],
        [r.from_stage for r in rows],
        [r.to_stage for r in rows],
        [r.exited_at for r in rows],
        [r.channel for r in rows],
        [r.event for r in rows],
        [r.rule_id for r in rows],
    )


async def delete_transitions(
    conn: asyncpg.Connection[Any], customer_ids: Sequence[uuid.UUID]
) -> None:
    if customer_ids:
        await conn.execute(
            "DELETE FROM stage_transitions WHERE customer_id = ANY($1::uuid[])",
            list(customer_ids),
        )


async def set_event_stages(
    conn: asyncpg.Connection[Any], stages: Sequence[tuple[uuid.UUID, str | None]]
) -> None:
    """Rewrite ``events.stage`` of the given events."""
    if not stages:
        return
    await conn.execute(
        """
        UPDATE events e SET stage = u.stage
        FROM unnest($1::uuid[], $2::text[]) AS u(event_id, stage)
        WHERE e.event_id = u.event_id
        """,
        [s[0] for s in stages],
        [s[1] for s in stages],
    )


_TIMELINES = """
    SELECT customer_id, event_id, type, event, channel, occurred_at, stage, properties
    FROM events WHERE customer_id = ANY($1::uuid[])
    ORDER BY customer_id, occurred_at, event_id
"""
_TIMELINES_WITHOUT_PROPERTIES = _TIMELINES.replace(", properties", ", '{}'::jsonb AS properties")


async def timelines(
    conn: asyncpg.Connection[Any],
    customer_ids: Sequence[uuid.UUID],
    *,
    with_properties: bool,
    prefetch: int = 5_000,
) -> AsyncIterator[asyncpg.Record]:
    """The customers' events ordered by (customer_id, occurred_at, event_id), streamed.

    Needs a transaction (a server-side cursor). ``properties`` is the JSON text, or ``'{}'``
    when the caller does not need it (a model without ``where`` predicates).
    """
    query = _TIMELINES if with_properties else _TIMELINES_WITHOUT_PROPERTIES
    async for row in conn.cursor(query, list(customer_ids), prefetch=prefetch):
        yield row


async def lock_stale_customers(
    conn: asyncpg.Connection[Any], fingerprint: str, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """Lock (FOR UPDATE, ascending id) up to `limit` live customers with an id above `after`
    whose journey was not computed by the model `fingerprint`."""
    rows = await conn.fetch(
        """
        SELECT id FROM customers
        WHERE id > coalesce($1::uuid, '00000000-0000-0000-0000-000000000000'::uuid)
          AND merged_into IS NULL AND journey_model IS DISTINCT FROM $2
        ORDER BY id LIMIT $3
        FOR UPDATE
        """,
        after,
        fingerprint,
        limit,
    )
    return [r["id"] for r in rows]


async def count_stale_customers(conn: asyncpg.Connection[Any], fingerprint: str) -> int:
    count = await conn.fetchval(
        """
        SELECT count(*) FROM customers
        WHERE merged_into IS NULL AND journey_model IS DISTINCT FROM $1
        """,
        fingerprint,
    )
    return int(count)


async def survivor_of(
    conn: asyncpg.Connection[Any], customer_id: uuid.UUID, max_hops: int
) -> uuid.UUID | None:
    """The customer, or the one it was merged into (following the chain); no locks."""
    current = customer_id
    for _ in range(max_hops):
        row = await conn.fetchrow("SELECT merged_into FROM customers WHERE id = $1", current)
        if row is None:
            return None
        if row["merged_into"] is None:
            return current
        current = row["merged_into"]
    return None


async def lock_customer(conn: asyncpg.Connection[Any], customer_id: uuid.UUID) -> uuid.UUID | None:
    """Lock one customer row (FOR UPDATE); returns where it was merged into, if anywhere."""
    merged_into: uuid.UUID | None = await conn.fetchval(
        "SELECT merged_into FROM customers WHERE id = $1 FOR UPDATE", customer_id
    )
    return merged_into
