"""Analytics read API (read token): `/v1/analytics/…`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import APIRouter, Depends, Request

from app.analytics import service
from app.analytics.schemas import (
    AbandonedCartsOut,
    AttributionOut,
    AttributionParams,
    CartsParams,
    FunnelOut,
    FunnelParams,
    StagesOut,
    StagesParams,
    TouchpointsOut,
    TouchpointsParams,
)
from app.auth.dependencies import ReadAccess
from app.config import Settings
from app.customers.endpoints import TOKEN_ERRORS
from app.db import read_connection
from app.journey.endpoints import ActiveModel
from app.kit.query import parameters

T = TypeVar("T")

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])

ANALYTICS_ERRORS: dict[int | str, dict[str, Any]] = {
    **TOKEN_ERRORS,
    422: {"description": "A parameter is not valid (see `errors`)."},
    503: {
        "description": "The database could not be reached (retry after `Retry-After` seconds), "
        "or the query ran longer than `PERCORSO_ANALYTICS_STATEMENT_TIMEOUT_MS` (`query-timeout`:"
        " ask for less)."
    },
}


async def _answer(request: Request, query: Callable[[asyncpg.Connection[Any]], Awaitable[T]]) -> T:
    """``query``'s answer, run on a read connection in one bounded snapshot
    (:func:`service.snapshot`, under ``PERCORSO_ANALYTICS_STATEMENT_TIMEOUT_MS``)."""
    settings: Settings = request.state.settings
    async with (
        read_connection(request) as connection,
        service.snapshot(connection, settings.analytics_statement_timeout_ms),
    ):
        return await query(connection)


@router.get(
    "/stages",
    response_model=StagesOut,
    responses=ANALYTICS_ERRORS,
    openapi_extra=parameters(StagesParams),
)
async def stages(
    request: Request,
    _: ReadAccess,
    model: ActiveModel,
    params: Annotated[StagesParams, Depends(StagesParams.of)],
) -> StagesOut:
    """Live customers (merged-away ids never count) by current stage and by furthest stage:
    every stage of the active model in journey order with its count and share (stages
    without customers included), those without a stage yet, and those in a stage the model
    does not have. Optionally only customers last seen in `[last_seen_since,
    last_seen_until)`."""
    return await _answer(request, lambda c: service.stages(c, model, params))


@router.get(
    "/funnel",
    response_model=FunnelOut,
    responses=ANALYTICS_ERRORS,
    openapi_extra=parameters(FunnelParams),
)
async def funnel(
    request: Request,
    _: ReadAccess,
    model: ActiveModel,
    params: Annotated[FunnelParams, Depends(FunnelParams.of)],
) -> FunnelOut:
    """An ordered funnel over the model's stages (or `stages`): the customers whose first
    entry ever into the first step falls in `[since, until)`, then at each later step those
    who entered it after entering the previous one (within `within` of the first step, when
    given), with the conversion from the previous and the first step and the median and
    90th percentile time between the previous step and this one, in seconds. A customer who
    skipped a step (a first order goes straight to purchase) leaves the funnel there."""
    return await _answer(request, lambda c: service.funnel(c, model, params))


@router.get(
    "/touchpoints",
    response_model=TouchpointsOut,
    responses=ANALYTICS_ERRORS,
    openapi_extra=parameters(TouchpointsParams),
)
async def touchpoints(
    request: Request,
    _: ReadAccess,
    model: ActiveModel,
    params: Annotated[TouchpointsParams, Depends(TouchpointsParams.of)],
) -> TouchpointsOut:
    """The channel by stage touchpoint matrix: events that occurred in `[since, until)` by
    channel and by the stage the customer was in once the event was applied
    (`events.stage`), each cell with its events and distinct customers, and the totals by
    channel, by stage and in all. Machine activity is left out unless `include_machine`."""
    return await _answer(request, lambda c: service.touchpoints(c, model, params))


@router.get(
    "/attribution",
    response_model=AttributionOut,
    responses=ANALYTICS_ERRORS,
    openapi_extra=parameters(AttributionParams),
)
async def attribution(
    request: Request,
    _: ReadAccess,
    model: ActiveModel,
    params: Annotated[AttributionParams, Depends(AttributionParams.of)],
) -> AttributionOut:
    """Which channels (or campaign sources, media, names) led to conversions: each entry into
    `stage` (default `purchase`), or each `event`, in `[since, until)` gives one conversion's
    credit to the converting customer's touchpoints (track, page and screen calls) in the
    `lookback` before it, under the `model`: `first`, `last`, `linear` or `time_decay`.
    Credits add up to `attributed`, the conversions that had a touchpoint."""
    return await _answer(request, lambda c: service.attribution(c, model, params))


@router.get(
    "/abandoned-carts",
    response_model=AbandonedCartsOut,
    responses={**ANALYTICS_ERRORS, 400: {"description": "`cursor` is not one this list issued."}},
    openapi_extra=parameters(CartsParams),
)
async def abandoned_carts(
    request: Request,
    _: ReadAccess,
    params: Annotated[CartsParams, Depends(CartsParams.of)],
) -> AbandonedCartsOut:
    """Customers whose latest cart activity (Segment's e-commerce events: `Product Added`,
    `Product Removed`, `Cart Viewed`, `Checkout Started`, `Checkout Step Viewed`,
    `Checkout Step Completed`, `Payment Info Entered`, `Coupon Entered`, `Coupon Applied`)
    is older than `idle` and who have no `Order Completed` after it: newest first, with the
    cart event's time, products, value and currency, keyset-paginated (`next_cursor`)."""
    return await _answer(request, lambda c: service.abandoned_carts(c, params))
