"""Timeline read API (read token)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError

from app.auth.dependencies import ReadAccess, read_token
from app.customers.endpoints import READ_ERRORS
from app.db import read_connection
from app.errors import ProblemError
from app.kit.direct import checks, with_uuid
from app.kit.query import parameters
from app.kit.responses import json_response
from app.timeline import service
from app.timeline.schemas import TimelinePage, TimelineParams

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.get(
    "/{customer_id}/timeline",
    response_model=TimelinePage,
    responses={**READ_ERRORS, 400: {"description": "`cursor` is not one this list issued."}},
    # Read by the model in one pass, not one by one by FastAPI (app.kit.query).
    openapi_extra=parameters(TimelineParams),
)
async def timeline(
    request: Request,
    customer_id: uuid.UUID,
    _: ReadAccess,
    params: Annotated[TimelineParams, Depends(TimelineParams.of)],
) -> Response:
    """The customer's events, newest first, with keyset pagination (`next_cursor`).
    Filters combine with AND; repeat a filter to allow several values."""
    return await _page(request, customer_id, params)


async def _page(request: Request, customer_id: uuid.UUID, params: TimelineParams) -> Response:
    async with read_connection(request) as connection:
        page = await service.timeline(
            connection,
            customer_id,
            limit=params.limit,
            cursor=params.cursor,
            channels=[c.value for c in params.channel or []],
            types=list(params.type or []),
            stages=list(params.stage or []),
            since=params.since,
            until=params.until,
        )
    return json_response(page)


async def _direct(customer_id: uuid.UUID, request: Request) -> Response:
    """:func:`timeline` for a request that passes its checks, without FastAPI's routing and
    dependency solving (`app.kit.direct`): the same checks, in the same order."""
    with checks(ProblemError, RequestValidationError):
        await read_token(request)
        params = await TimelineParams.of(request)
    return await _page(request, customer_id, params)


direct_route = with_uuid("GET", f"{router.prefix}/{{}}/timeline", _direct)
