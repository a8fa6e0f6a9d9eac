"""Journey analytics: parameters checked against the active journey model, queries run in
one bounded snapshot (:func:`snapshot`), answers in the model's stage order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from app.analytics import repository
from app.analytics.schemas import StageCount, StageDistribution, StagesOut, StagesParams, share
from app.errors import QueryTimeout
from app.journey.model import JourneyModel


@asynccontextmanager
async def snapshot(connection: asyncpg.Connection[Any], timeout_ms: int) -> AsyncIterator[None]:
    """The request's queries in one read-only snapshot; a query that runs longer than
    ``timeout_ms`` is cancelled by the database and answered as :class:`QueryTimeout`."""
    try:
        async with repository.bounded(connection, timeout_ms):
            yield
    except asyncpg.QueryCanceledError:
        raise QueryTimeout(
            f"the query ran longer than {timeout_ms} ms (PERCORSO_ANALYTICS_STATEMENT_TIMEOUT_MS)"
            " and was cancelled: ask for a shorter window or fewer filters"
        ) from None


async def stages(
    connection: asyncpg.Connection[Any], model: JourneyModel, params: StagesParams
) -> StagesOut:
    """Live customers by current and by furthest stage, every stage of ``model`` in order."""
    current, furthest = await repository.stage_counts(
        connection, params.last_seen_since, params.last_seen_until
    )
    total = sum(current.values())
    return StagesOut(
        model=model.name,
        last_seen_since=params.last_seen_since,
        last_seen_until=params.last_seen_until,
        customers=total,
        current=_distribution(model, current, total),
        furthest=_distribution(model, furthest, total),
    )


def _distribution(
    model: JourneyModel, counts: Mapping[str | None, int], total: int
) -> StageDistribution:
    known = set(model.stages)
    return StageDistribution(
        stages=[
            StageCount(
                stage=stage,
                customers=counts.get(stage, 0),
                share=share(counts.get(stage, 0), total),
            )
            for stage in model.stages
        ],
        no_stage=counts.get(None, 0),
        other_stage=sum(
            n for stage, n in counts.items() if stage is not None and stage not in known
        ),
    )
