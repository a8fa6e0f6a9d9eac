"""Timeline read API (read token)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.auth.dependencies import ReadAccess
from app.customers.endpoints import READ_ERRORS
from app.db import read_connection
from app.kit.query import parameters
from app.kit.responses import json_response
from app.timeline import service
from app.timeline.schemas import TimelinePage, TimelineParams

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.get(
    "/{customer_id}/timeline",
    response_model=TimelinePage,
    responses=READ_ERRORS,
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
