"""SQL of the journey's write side (asyncpg; a batch's rows are one parameter, see
app.kit.bulk). The caller owns the transaction and holds the row locks of every customer
passed in (see `app.journey.service`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app.journey.model import JourneyState
from app.kit import bulk


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
    state: str  # JSON of the journey state once this event was applied: a checkpoint
    exited_at: datetime | None = None


_STATES = bulk.rows_from(
    "$1",
    "id uuid, current_stage text, furthest_stage text, state jsonb, model text,"
    " at timestamptz, event_id uuid",
)
_SAVE_STATES = f"""
    UPDATE customers c
    SET current_stage = u.current_stage, furthest_stage = u.furthest_stage,
        journey_state = u.state, journey_model = u.model,
        journey_at = u.at, journey_event_id = u.event_id
    FROM {_STATES} AS u
    WHERE c.id = u.id
"""  # noqa: S608 (constant SQL: the rows are the parameter)


async def save_states(conn: asyncpg.Connection[Any], saved: Sequence[SavedJourney]) -> None:
    """Write the journey columns of each customer, in one statement (ascending ids)."""
    if saved:
        ordered = sorted(saved, key=lambda s: s.customer_id)
        await conn.execute(
            _SAVE_STATES,
            bulk.rows(
                (
                    s.customer_id,
                    s.state.current_stage,
                    s.state.furthest_stage,
                    s.state.to_json(),
                    s.model,
                    s.at,
                    s.event_id,
                )
                for s in ordered
            ),
        )


_CLOSE_OPEN = f"""
    UPDATE stage_transitions t SET exited_at = u.exited_at
    FROM {bulk.rows_from("$1", "customer_id uuid, exited_at timestamptz")} AS u
    WHERE t.customer_id = u.customer_id AND t.exited_at IS NULL
"""  # noqa: S608 (constant SQL: the rows are the parameter)


async def close_open_transitions(
    conn: asyncpg.Connection[Any], exits: Sequence[tuple[uuid.UUID, datetime]]
) -> None:
    """Set ``exited_at`` of each customer's open transition (if any), in one statement."""
    if exits:
        await conn.execute(_CLOSE_OPEN, bulk.rows(sorted(exits)))


_TRANSITIONS = bulk.rows_from(
    "$1",
    "customer_id uuid, entered_at timestamptz, event_id uuid, from_stage text, to_stage text,"
    " exited_at timestamptz, channel text, event text, rule_id text, state jsonb",
)
_INSERT_TRANSITIONS = f"""
    INSERT INTO stage_transitions (customer_id, entered_at, event_id, from_stage, to_stage,
                                   exited_at, channel, event, rule_id, state)
    SELECT * FROM {_TRANSITIONS} AS u
"""  # noqa: S608 (constant SQL: the rows are the parameter)


async def insert_transitions(
    conn: asyncpg.Connection[Any], transitions: Sequence[TransitionRow]
) -> None:
    if transitions:
        await conn.execute(
            _INSERT_TRANSITIONS,
            bulk.rows(
                (
                    r.customer_id,
                    r.entered_at,
                    r.event_id,
                    r.from_stage,
                    r.to_stage,
                    r.exited_at,
                    r.channel,
                    r.event,
                    r.rule_id,
                    orjson.Fragment(r.state),
                )
                for r in transitions
            ),
        )


async def delete_transitions(
    conn: asyncpg.Connection[Any], customer_ids: Sequence[uuid.UUID]
) -> None:
    if customer_ids:
        await conn.execute(
            "DELETE FROM stage_transitions WHERE customer_id = ANY($1::uuid[])",
            list(customer_ids),
        )


# Per customer: an event (or a bound, below) in (occurred_at, event_id) order.
_AT_EVENT = bulk.rows_from("$1", "id uuid, at timestamptz, event_id uuid")
_CHECKPOINTS = f"""
    SELECT t.* FROM {_AT_EVENT} AS s
    CROSS JOIN LATERAL (
        SELECT customer_id, entered_at, event_id, from_stage, to_stage, channel, event,
               rule_id, state::text AS state
        FROM stage_transitions t
        WHERE t.customer_id = s.id AND (t.entered_at, t.event_id) < (s.at, s.event_id)
          AND t.state IS NOT NULL
        ORDER BY t.entered_at DESC, t.event_id DESC LIMIT 1
    ) t
"""  # noqa: S608 (constant SQL: the rows are the parameter)


async def checkpoints(
    conn: asyncpg.Connection[Any], since: Sequence[tuple[uuid.UUID, datetime, uuid.UUID]]
) -> dict[uuid.UUID, TransitionRow]:
    """Per ``(customer, at, event_id)``: the customer's last transition ordered before the
    event ``(at, event_id)`` that carries its state, if any (one index probe each)."""
    if not since:
        return {}
    found = await conn.fetch(_CHECKPOINTS, bulk.rows(since))
    return {r["customer_id"]: TransitionRow(**r) for r in found}


# Where a replay starts, per customer: at its checkpoint's (entered_at, event_id), or at
# the first event when both are NULL (then the bound is before any event and transition).
Bound = tuple[uuid.UUID, datetime | None, uuid.UUID | None]


_DELETE_FROM = f"""
    DELETE FROM stage_transitions t USING {_AT_EVENT} AS b
    WHERE t.customer_id = b.id
      AND (t.entered_at, t.event_id) >= (
          coalesce(b.at, '-infinity'),
          coalesce(b.event_id, '00000000-0000-0000-0000-000000000000'))
"""  # noqa: S608 (constant SQL: the rows are the parameter)


async def delete_transitions_from(conn: asyncpg.Connection[Any], bounds: Sequence[Bound]) -> None:
    """Delete each customer's transitions from its bound on (the checkpoint included: the
    replay writes it again with its new exit), or all of them without a bound."""
    if bounds:
        await conn.execute(_DELETE_FROM, bulk.rows(bounds))


_SET_STAGES = f"""
    UPDATE events e SET stage = u.stage
    FROM {bulk.rows_from("$1", "event_id uuid, stage text")} AS u
    WHERE e.event_id = u.event_id
"""  # noqa: S608 (constant SQL: the rows are the parameter)


async def set_event_stages(
    conn: asyncpg.Connection[Any], stages: Sequence[tuple[uuid.UUID, str | None]]
) -> None:
    """Rewrite ``events.stage`` of the given events."""
    if stages:
        await conn.execute(_SET_STAGES, bulk.rows(stages))


_TIMELINES = f"""
    SELECT b.id AS customer_id, e.event_id, e.type, e.event, e.channel, e.occurred_at,
           e.stage, e.properties, e.flags
    FROM {_AT_EVENT} AS b
    CROSS JOIN LATERAL (
        SELECT * FROM events e
        WHERE e.customer_id = b.id
          AND (e.occurred_at, e.event_id) > (
              coalesce(b.at, '-infinity'),
              coalesce(b.event_id, '00000000-0000-0000-0000-000000000000'))
        ORDER BY e.occurred_at, e.event_id
    ) e
    ORDER BY b.id, e.occurred_at, e.event_id
"""  # noqa: S608 (constant SQL: the rows are the parameter)
_TIMELINES_WITHOUT_PROPERTIES = _TIMELINES.replace("e.properties", "'{}'::jsonb AS properties", 1)


def timelines(
    conn: asyncpg.Connection[Any],
    bounds: Sequence[Bound],
    *,
    with_properties: bool,
    prefetch: int = 5_000,
) -> AsyncIterable[asyncpg.Record]:
    """The customers' events after their bounds, ordered by (customer_id, occurred_at,
    event_id), streamed (``async for``): rows of ``customer_id, event_id, type, event,
    channel, occurred_at, stage, properties, flags``, in that order (a replay unpacks them).

    Needs a transaction (a server-side cursor). ``properties`` is the JSON text, or ``'{}'``
    when the caller does not need it (a model without ``where`` predicates); ``flags`` is the
    JSON text of the event's flags. The cursor itself, not a generator around it: a replay
    reads tens of thousands of rows a batch, and each pass through a generator costs a
    coroutine step.
    """
    query = _TIMELINES if with_properties else _TIMELINES_WITHOUT_PROPERTIES
    return conn.cursor(query, bulk.rows(bounds), prefetch=prefetch)


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
