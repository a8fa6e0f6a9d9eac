"""Journey analytics: parameters checked against the active journey model, queries run in
one bounded snapshot (:func:`snapshot`), answers in the model's stage order."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

import asyncpg
import orjson

from app.analytics import repository
from app.analytics.repository import AttributionQuery
from app.analytics.schemas import (
    MAX_WINDOW,
    AbandonedCart,
    AbandonedCartsOut,
    AttributionOut,
    AttributionParams,
    CartsParams,
    ChannelCount,
    Count,
    CreditOut,
    FunnelOut,
    FunnelParams,
    FunnelStep,
    OtherCredit,
    StageCount,
    StageDistribution,
    StagesOut,
    StagesParams,
    StageTotal,
    TouchpointCell,
    TouchpointsOut,
    TouchpointsParams,
    share,
)
from app.errors import InvalidParameters, QueryTimeout
from app.journey.model import JourneyModel
from app.kit.cursor import Paged, decode_cursor, encode_time_and_id, time_and_id
from app.models import CHANNELS

# The conversion stage when neither `stage` nor `event` is given.
DEFAULT_CONVERSION_STAGE = "purchase"
# How far back carts are looked for when `since` is not given.
DEFAULT_CART_WINDOW = timedelta(days=30)
# Events whose properties are one product (Segment's e-commerce spec).
_PRODUCT_EVENTS = frozenset({"Product Added", "Product Removed"})


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


async def funnel(
    connection: asyncpg.Connection[Any], model: JourneyModel, params: FunnelParams
) -> FunnelOut:
    """The funnel over ``params.stages`` (default: the model's): see the README's Analytics
    section for what each number means."""
    steps = _funnel_steps(model, params.stages)
    counts = await repository.funnel(connection, steps, params.since, params.until, params.within)
    first = counts[1].customers if 1 in counts else 0
    out: list[FunnelStep] = []
    previous = first
    for index, stage in enumerate(steps, start=1):
        count = counts.get(index)
        customers = count.customers if count else 0
        out.append(
            FunnelStep(
                stage=stage,
                customers=customers,
                conversion_from_previous=None if index == 1 else share(customers, previous),
                conversion_from_first=share(customers, first),
                median_seconds_from_previous=_seconds(count.median_gap) if count else None,
                p90_seconds_from_previous=_seconds(count.p90_gap) if count else None,
            )
        )
        previous = customers
    return FunnelOut(
        model=model.name,
        since=params.since,
        until=params.until,
        within_seconds=params.within.total_seconds() if params.within else None,
        steps=out,
    )


def _funnel_steps(model: JourneyModel, stages: list[str] | None) -> list[str]:
    if stages is None:
        return list(model.stages)
    check_stages(model, stages, "stages")
    ranks = [model.rank(stage) for stage in stages]
    if any(later <= earlier for earlier, later in itertools.pairwise(ranks)):
        raise InvalidParameters(
            "the funnel's stages must be distinct and in the model's order",
            errors=[
                {
                    "field": "query.stages",
                    "message": f"list them in the model's order: {', '.join(model.stages)}",
                }
            ],
        )
    return stages


def check_stages(model: JourneyModel, stages: list[str], field: str) -> None:
    """:class:`InvalidParameters` naming ``field`` unless every stage is one of ``model``'s."""
    unknown = [stage for stage in stages if stage not in model.stages]
    if unknown:
        raise InvalidParameters(
            f"unknown stage {unknown[0]!r} in journey model {model.name!r}",
            errors=[
                {
                    "field": f"query.{field}",
                    "message": f"unknown stage {unknown[0]!r}; the model's stages: "
                    f"{', '.join(model.stages)}",
                }
            ],
        )


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def touchpoints(
    connection: asyncpg.Connection[Any], model: JourneyModel, params: TouchpointsParams
) -> TouchpointsOut:
    """The channel by stage matrix of the window's events, every cell and both margins."""
    rows = await repository.touchpoints(
        connection,
        params.since,
        params.until,
        list(params.type or []),
        list(params.event or []),
        params.include_machine,
    )
    cells: dict[tuple[str, str | None], Count] = {}
    channels: dict[str, Count] = {}
    stages: dict[str | None, Count] = {}
    total = Count(events=0, customers=0)
    for row in rows:
        count = Count(events=row["events"], customers=row["customers"])
        if row["g_channel"] and row["g_stage"]:
            cells[row["channel"], row["stage"]] = count
        elif row["g_channel"]:
            channels[row["channel"]] = count
        elif row["g_stage"]:
            stages[row["stage"]] = count
        else:
            total = count
    known = set(model.stages)
    others = sorted((s for s in stages if s not in known), key=lambda s: (s is not None, s or ""))
    axis: list[str | None] = [*model.stages, *others]
    zero = Count(events=0, customers=0)
    return TouchpointsOut(
        model=model.name,
        since=params.since,
        until=params.until,
        channels=list(CHANNELS),
        stages=axis,
        cells=[
            TouchpointCell(
                channel=channel, stage=stage, **cells.get((channel, stage), zero).__dict__
            )
            for channel in CHANNELS
            for stage in axis
        ],
        by_channel=[
            ChannelCount(channel=channel, **channels.get(channel, zero).model_dump())
            for channel in CHANNELS
        ],
        by_stage=[
            StageTotal(stage=stage, **stages.get(stage, zero).model_dump()) for stage in axis
        ],
        total=total,
    )


async def attribution(
    connection: asyncpg.Connection[Any], model: JourneyModel, params: AttributionParams
) -> AttributionOut:
    """Credit for the window's conversions, per value of the dimension, under the model."""
    if params.event is not None and params.stage is not None:
        raise InvalidParameters(
            "give a conversion `stage` or `event`, not both",
            errors=[{"field": "query.event", "message": "give `stage` or `event`, not both"}],
        )
    stage = params.stage or (DEFAULT_CONVERSION_STAGE if params.event is None else None)
    if stage is not None:
        check_stages(model, [stage], "stage")
    row = await repository.attribution(
        connection,
        AttributionQuery(
            conversion="stage" if stage is not None else "event",
            converted=stage if stage is not None else str(params.event),
            since=params.since,
            until=params.until,
            lookback=params.lookback,
            model=params.model,
            half_life=params.half_life,
            dimension=params.dimension,
            limit=params.limit,
            include_machine=params.include_machine,
        ),
    )
    decaying = params.model == "time_decay"
    return AttributionOut(
        model=params.model,
        dimension=params.dimension,
        stage=stage,
        event=params.event,
        since=params.since,
        until=params.until,
        lookback_seconds=params.lookback.total_seconds(),
        half_life_seconds=params.half_life.total_seconds() if decaying else None,
        conversions=row["conversions"],
        attributed=row["attributed"],
        unattributed=row["conversions"] - row["attributed"],
        values=[
            CreditOut(value=value, credit=round(credit, 6), touchpoints=touchpoints)
            for value, credit, touchpoints in orjson.loads(row["top"])
        ],
        other=OtherCredit(
            values=row["other_values"],
            credit=round(row["other_credit"], 6),
            touchpoints=row["other_touchpoints"],
        ),
    )


async def abandoned_carts(
    connection: asyncpg.Connection[Any], params: CartsParams
) -> AbandonedCartsOut:
    """Customers whose last cart activity is older than ``params.idle`` and who ordered
    nothing after it, newest activity first, a page at a time."""
    as_of = params.as_of or datetime.now(UTC)
    try:
        since = params.since or as_of - DEFAULT_CART_WINDOW
        cutoff = as_of - params.idle
    except OverflowError:  # before Python's year 1: no event is that old
        raise InvalidParameters(
            "`as_of` is too early to look back from",
            errors=[
                {
                    "field": "query.as_of",
                    "message": "at least `idle`, and without `since` 30 days, after year 1",
                }
            ],
        ) from None
    if since >= as_of or as_of - since > MAX_WINDOW:
        raise InvalidParameters(
            "`since` must be before `as_of`, by at most 366 days",
            errors=[{"field": "query.since", "message": "before `as_of`, by at most 366 days"}],
        )
    after = (
        decode_cursor(params.cursor, Paged.ABANDONED_CARTS, time_and_id) if params.cursor else None
    )
    rows = await repository.abandoned_carts(
        connection, since, cutoff, as_of, after, params.limit + 1
    )
    more = len(rows) > params.limit
    items = [_cart(row) for row in rows[: params.limit]]
    return AbandonedCartsOut(
        as_of=as_of,
        since=since,
        idle_seconds=params.idle.total_seconds(),
        items=items,
        next_cursor=encode_time_and_id(
            Paged.ABANDONED_CARTS, items[-1].occurred_at, items[-1].event_id
        )
        if more and items
        else None,
    )


def _cart(row: asyncpg.Record) -> AbandonedCart:
    properties = orjson.loads(row["properties"])
    products = properties.get("products")
    if not isinstance(products, list):
        products = [properties] if row["event"] in _PRODUCT_EVENTS else []
    currency = properties.get("currency")
    return AbandonedCart(
        customer_id=row["customer_id"],
        event_id=row["event_id"],
        event=row["event"],
        channel=row["channel"],
        occurred_at=row["occurred_at"],
        products=[p for p in products if isinstance(p, dict)],
        value=_value(properties),
        currency=currency if isinstance(currency, str) else None,
        properties=properties,
    )


def _value(properties: dict[str, Any]) -> float | None:
    """The cart's value as the spec's events give it: `value`, `revenue` or `total`, else a
    product's `price` times its `quantity` (1 when absent)."""
    for key in ("value", "revenue", "total"):
        if _number(found := properties.get(key)):
            return float(found)
    price, quantity = properties.get("price"), properties.get("quantity", 1)
    if _number(price) and _number(quantity):
        return float(price) * float(quantity)
    return None


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
