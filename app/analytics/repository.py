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
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg


@asynccontextmanager
async def bounded(connection: asyncpg.Connection[Any], timeout_ms: int) -> AsyncIterator[None]:
    """A read-only, repeatable-read transaction whose statements are cancelled after
    ``timeout_ms`` (``asyncpg.QueryCanceledError``); the setting ends with the transaction."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        await connection.execute(
            "SELECT set_config('statement_timeout', $1, true)", str(timeout_ms)
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
