"""Timeline read API (read token)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.auth.dependencies import ReadAccess
from app.customers.endpoints import READ_ERRORS
from app.db import read_connection
from app.kit.responses import json_response
from app.timeline import service
from app.timeline.schemas import TimelinePage
from app.touchpoint import Channel, EventType

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.get("/{customer_id}/timeline", response_model=TimelinePage, responses=READ_ERRORS)
async def timeline(
    request: Request,
    customer_id: uuid.UUID,
    _: ReadAccess,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    channel: Annotated[list[Channel] | None, Query()] = None,
    type: Annotated[list[EventType] | None, Query()] = None,
    stage: Annotated[list[str] | None, Query(max_length=20)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Response:
    """The customer's events, newest first, with keyset pagination (`next_cursor`).
    Filters combine with AND; repeat a filter to allow several values."""
    async with read_connection(request) as connection:
        page = await service.timeline(
            connection,
            customer_id,
            limit=limit,
            cursor=cursor,
            channels=[c.value for c in channel or []],
            types=list(type or []),
            stages=list(stage or []),
            since=since,
            until=until,
        )
    return json_response(page)
