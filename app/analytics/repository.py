"""SQL of the analytics read side (asyncpg, on the API's read pool).

Every query runs inside :func:`bounded`: one read-only transaction with a statement
timeout, so the answers of a request come from one snapshot and no query can pin the
database. Merged-away customers never count: ``customers`` is filtered on
``merged_into IS NULL``, and ``events`` and ``stage_transitions`` hold live customers only
(a merge moves the loser's events to the survivor and deletes its transitions, in the
transaction that marks it merged, then replays the survivor's history).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

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
