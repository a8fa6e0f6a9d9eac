"""SQL of the analytics read side (asyncpg, on the API's read pool).

Every query runs inside :func:`bounded`: one read-only transaction with a statement
timeout, so the answers of a request come from one snapshot and no query can pin the
database. Merged-away customers never count: ``customers`` is filtered on
``merged_into IS NULL``, and ``events`` and ``stage_transitions`` hold live customers only
(a merge moves the loser's events to the survivor and deletes its transitions, in the
transaction that marks it merged, then replays the survivor's history).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from app.email import service as email

if TYPE_CHECKING:
    import asyncpg


@asynccontextmanager
async def bounded(connection: asyncpg.Connection[Any], timeout_ms: int) -> AsyncIterator[None]:
    """A read-only, repeatable-read transaction whose statements are cancelled after
    ``timeout_ms`` (``asyncpg.QueryCanceledError``); the setting ends with the transaction."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        # No JIT: these queries' cost estimates (a recursive funnel's above all) make
        # PostgreSQL compile them, which took 700 ms against 170 ms of execution.
        await connection.execute(
            "SELECT set_config('statement_timeout', $1, true), set_config('jit', 'off', true)",
            str(timeout_ms),
        )
        yield


# One scan for both distributions: a row of the first grouping set counts a current stage
# (GROUPING(current_stage) = 0), one of the second a furthest stage.
_STAGES = """
    SELECT GROUPING(current_stage) = 0 AS is_current, current_stage, furthest_stage,
           count(*) AS customers
    FROM customers
    WHERE merged_into IS NULL
      AND ($1::timestamptz IS NULL OR last_seen_at >= $1)
      AND ($2::timestamptz IS NULL OR last_seen_at < $2)
    GROUP BY GROUPING SETS ((current_stage), (furthest_stage))
"""


async def stage_counts(
    connection: asyncpg.Connection[Any], since: datetime | None, until: datetime | None
) -> tuple[dict[str | None, int], dict[str | None, int]]:
    """Live customers (last seen in ``[since, until)``, either end open when None) by current
    stage and by furthest stage; None is the stage of those without one."""
    current: dict[str | None, int] = {}
    furthest: dict[str | None, int] = {}
    for row in await connection.fetch(_STAGES, since, until):
        if row["is_current"]:
            current[row["current_stage"]] = row["customers"]
        else:
            furthest[row["furthest_stage"]] = row["customers"]
    return current, furthest


# Step 1: customers whose first entry ever into the first stage is in [since, until). Each
# later step: the customer's first entry into its stage after the previous step's entry (in
# journey order, (entered_at, event_id)), at most `within` after step 1 when given. One
# probe of the transitions' primary key (customer_id, entered_at, event_id) per customer
# and step; `gap` is the seconds since the previous step.
_FUNNEL = """
    WITH RECURSIVE entered (step, customer_id, first_at, at, event_id, gap) AS (
        SELECT 1, t.customer_id, t.entered_at, t.entered_at, t.event_id, NULL::float8
        FROM stage_transitions t
        WHERE t.to_stage = ($1::text[])[1] AND t.entered_at >= $2 AND t.entered_at < $3
          AND NOT EXISTS (
              SELECT FROM stage_transitions p
              WHERE p.customer_id = t.customer_id AND p.to_stage = t.to_stage
                AND (p.entered_at, p.event_id) < (t.entered_at, t.event_id))
      UNION ALL
        SELECT e.step + 1, e.customer_id, e.first_at, n.entered_at, n.event_id,
               extract(epoch FROM n.entered_at - e.at)::float8
        FROM entered e CROSS JOIN LATERAL (
            SELECT t.entered_at, t.event_id FROM stage_transitions t
            WHERE t.customer_id = e.customer_id AND t.to_stage = ($1::text[])[e.step + 1]
              AND (t.entered_at, t.event_id) > (e.at, e.event_id)
              AND ($4::interval IS NULL OR t.entered_at <= e.first_at + $4)
            ORDER BY t.entered_at, t.event_id LIMIT 1
        ) n
        WHERE e.step < cardinality($1)
    )
    SELECT step, count(*) AS customers,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) AS median,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY gap) AS p90
    FROM entered GROUP BY step
"""


@dataclass(frozen=True, slots=True)
class StepCount:
    customers: int
    median_gap: float | None  # seconds from the previous step
    p90_gap: float | None


async def funnel(
    connection: asyncpg.Connection[Any],
    stages: list[str],
    since: datetime,
    until: datetime,
    within: timedelta | None,
) -> dict[int, StepCount]:
    """Per step (1-based; steps nobody reached are absent) of the funnel over ``stages``."""
    rows = await connection.fetch(_FUNNEL, stages, since, until, within)
    return {r["step"]: StepCount(r["customers"], r["median"], r["p90"]) for r in rows}


# One pass over the window's events: the cells and both margins, whose distinct customers
# cannot be summed from the cells. `g_channel`/`g_stage`: the row groups by that column.
_TOUCHPOINTS = """
    SELECT GROUPING(channel) = 0 AS g_channel, GROUPING(stage) = 0 AS g_stage, channel, stage,
           count(*) AS events, count(DISTINCT customer_id) AS customers
    FROM events
    WHERE occurred_at >= $1 AND occurred_at < $2
      AND (cardinality($3::text[]) = 0 OR type = ANY($3::text[]))
      AND (cardinality($4::text[]) = 0 OR event = ANY($4::text[]))
      AND ($5 OR NOT flags ? 'machine_activity')
    GROUP BY GROUPING SETS ((channel, stage), (channel), (stage), ())
"""


async def touchpoints(
    connection: asyncpg.Connection[Any],
    since: datetime,
    until: datetime,
    types: list[str],
    events: list[str],
    include_machine: bool,
) -> list[asyncpg.Record]:
    """Events occurred in ``[since, until)`` (of ``types`` and named ``events`` when not
    empty) and their distinct customers: rows of ``g_channel, g_stage, channel, stage,
    events, customers`` per channel and stage, per channel, per stage, and in all (a
    grouping set with no events has no row)."""
    return await connection.fetch(_TOUCHPOINTS, since, until, types, events, include_machine)


def _credited(value: str) -> str:
    """SQL of the jsonb expression ``value`` as a value to credit: a string or a number (a
    server library may send `utm_source` as one), not blank, as text. Anything else (an
    object, a list, a boolean, null, '') is no value: credited as text, `{"id": 5}` or
    `true` would show as campaigns of their own."""
    return (
        f"CASE WHEN jsonb_typeof({value}) IN ('string', 'number')"
        f" AND btrim({value} #>> '{{}}') <> '' THEN {value} #>> '{{}}' END"
    )


def _campaign(field: str) -> str:
    return _credited(f"e.context #> '{{campaign,{field}}}'")


# Percorso's own email opens and clicks (app.email) carry the campaign of their signed link
# as `properties.campaign`, not in `context.campaign`: without it, a newsletter's clicks
# would count for no campaign name.
_EMAIL_LINK_CAMPAIGN = "e.properties -> 'campaign'"
_EMAIL_CAMPAIGN = (
    f"CASE WHEN e.channel = 'email' AND e.event IN ('{email.OPENED}', '{email.CLICKED}')"
    f" THEN {_credited(_EMAIL_LINK_CAMPAIGN)} END"
)
# What each dimension credits, as SQL over a touchpoint `e` (fixed texts, picked by name).
_DIMENSIONS = {
    "channel": "e.channel",
    "campaign.source": _campaign("source"),
    "campaign.medium": _campaign("medium"),
    "campaign.name": f"coalesce({_campaign('name')}, {_EMAIL_CAMPAIGN})",
}
# Conversions in [$2, $3): entries into stage $1, or events named $1.
_CONVERSIONS = {
    "stage": """
        SELECT customer_id, entered_at AS at, event_id FROM stage_transitions
        WHERE to_stage = $1 AND entered_at >= $2 AND entered_at < $3""",
    "event": """
        SELECT customer_id, occurred_at AS at, event_id FROM events
        WHERE event = $1 AND occurred_at >= $2 AND occurred_at < $3
          AND ($8 OR NOT flags ? 'machine_activity')""",
}
# A conversion's touchpoints: its customer's track, page and screen calls in the lookback
# ($4) before it (in journey order, so never the converting event itself) that carry the
# dimension. Weights per model ($5), each conversion's normalised to a credit of 1; time
# decay halves every $6 seconds back from the conversion, counted from the conversion's
# newest touchpoint (its weight 1, so the sum never underflows to 0). Values ranked by
# credit; the first $7 listed, the rest summed.
_ATTRIBUTION = """
    WITH conversions AS ({conversions}),
    touches AS (
        SELECT c.customer_id, c.event_id AS conversion, t.value,
               extract(epoch FROM c.at - t.occurred_at) AS age,
               row_number() OVER w AS nth, count(*) OVER p AS n
        FROM conversions c CROSS JOIN LATERAL (
            SELECT e.occurred_at, e.event_id, {dimension} AS value FROM events e
            WHERE e.customer_id = c.customer_id AND e.occurred_at >= c.at - $4::interval
              AND (e.occurred_at, e.event_id) < (c.at, c.event_id)
              AND e.type IN ('track', 'page', 'screen')
              AND ($8 OR NOT e.flags ? 'machine_activity')
        ) t
        WHERE t.value IS NOT NULL
        WINDOW p AS (PARTITION BY c.customer_id, c.event_id),
               w AS (p ORDER BY t.occurred_at, t.event_id)
    ),
    weighted AS (
        SELECT customer_id, conversion, value, CASE $5::text
            WHEN 'first' THEN (nth = 1)::int::float8
            WHEN 'last' THEN (nth = n)::int::float8
            WHEN 'linear' THEN 1.0 / n
            ELSE CASE WHEN (age - min(age) OVER p) / $6 > 1000 THEN 0
                      ELSE power(0.5, (age - min(age) OVER p) / $6) END
        END AS weight
        FROM touches
        WINDOW p AS (PARTITION BY customer_id, conversion)
    ),
    per_value AS (
        SELECT value, sum(credit) AS credit, count(*) AS touchpoints
        FROM (
            SELECT value, weight / sum(weight) OVER (PARTITION BY customer_id, conversion)
                AS credit
            FROM weighted
        ) credited
        GROUP BY value
    ),
    ranked AS (
        SELECT value, credit, touchpoints, row_number() OVER (ORDER BY credit DESC, value) AS r
        FROM per_value
    )
    SELECT (SELECT count(*) FROM conversions) AS conversions,
           (SELECT count(*) FROM (SELECT DISTINCT customer_id, conversion FROM touches) d)
               AS attributed,
           (SELECT coalesce(jsonb_agg(jsonb_build_array(value, credit, touchpoints)
                                      ORDER BY r), '[]')
            FROM ranked WHERE r <= $7)::text AS top,
           (SELECT count(*) FROM ranked WHERE r > $7) AS other_values,
           (SELECT coalesce(sum(credit), 0) FROM ranked WHERE r > $7) AS other_credit,
           (SELECT coalesce(sum(touchpoints), 0) FROM ranked WHERE r > $7) AS other_touchpoints
"""


@functools.cache
def _attribution(conversion: str, dimension: str) -> str:
    return _ATTRIBUTION.format(
        conversions=_CONVERSIONS[conversion], dimension=_DIMENSIONS[dimension]
    )


@dataclass(frozen=True, slots=True)
class AttributionQuery:
    conversion: str  # "stage" or "event"
    converted: str  # the stage or event name
    since: datetime
    until: datetime
    lookback: timedelta
    model: str
    half_life: timedelta
    dimension: str
    limit: int
    include_machine: bool


async def attribution(connection: asyncpg.Connection[Any], q: AttributionQuery) -> asyncpg.Record:
    """One row: ``conversions``, ``attributed`` (those with a touchpoint), ``top`` (JSON
    text of ``[value, credit, touchpoints]`` arrays, most credit first, up to ``q.limit``)
    and ``other_values``, ``other_credit``, ``other_touchpoints`` for the rest."""
    row: asyncpg.Record | None = await connection.fetchrow(
        _attribution(q.conversion, q.dimension),
        q.converted,
        q.since,
        q.until,
        q.lookback,
        q.model,
        q.half_life.total_seconds(),
        q.limit,
        q.include_machine,
    )
    assert row is not None  # an aggregate: always one row
    return row


# Cart activity in Segment's e-commerce spec (browsing, cart and checkout events before an
# order), and the order that closes a cart.
CART_EVENTS: Final = [
    "Product Added",
    "Product Removed",
    "Cart Viewed",
    "Checkout Started",
    "Checkout Step Viewed",
    "Checkout Step Completed",
    "Payment Info Entered",
    "Coupon Entered",
    "Coupon Applied",
]
ORDER_EVENT: Final = "Order Completed"
# Cart events in [$2, $3) (the idle cutoff) after which their customer did nothing more to
# a cart and ordered nothing before $4 (as of): one range of the timeline's index each.
# Newest first, keyset-paginated after ($5, $6) like the timeline.
_CARTS = f"""
    SELECT e.event_id::text AS event_id, e.customer_id, e.event, e.channel, e.occurred_at,
           e.properties::text AS properties
    FROM events e
    WHERE e.event = ANY($1::text[]) AND e.occurred_at >= $2 AND e.occurred_at < $3
      AND ($5::timestamptz IS NULL OR (e.occurred_at, e.event_id) < ($5, $6::uuid))
      AND NOT EXISTS (
          SELECT FROM events n
          WHERE n.customer_id = e.customer_id
            AND (n.occurred_at, n.event_id) > (e.occurred_at, e.event_id)
            AND n.occurred_at < $4
            AND (n.event = ANY($1::text[]) OR n.event = '{ORDER_EVENT}'))
    ORDER BY e.occurred_at DESC, e.event_id DESC
    LIMIT $7
"""  # noqa: S608 (constant SQL)


async def abandoned_carts(
    connection: asyncpg.Connection[Any],
    since: datetime,
    cutoff: datetime,
    as_of: datetime,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to ``limit`` customers' last cart events (``properties`` as JSON text), newest
    first, after the position ``after``."""
    at, event_id = after if after is not None else (None, None)
    return await connection.fetch(_CARTS, CART_EVENTS, since, cutoff, as_of, at, event_id, limit)
