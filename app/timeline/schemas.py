"""Response shapes of the timeline API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from app.customers.schemas import Merged, RequestedId
from app.kit.query import Instant, QueryModel, storable
from app.touchpoint import Channel, EventType


class TimelineParams(QueryModel):
    """The timeline's query parameters. Filters combine with AND; repeat a filter to allow
    several values."""

    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=200)
    channel: list[Channel] | None = None
    type: list[EventType] | None = None
    stage: list[Annotated[str, storable("stage")]] | None = Field(None, max_length=20)
    since: Instant | None = None
    until: Instant | None = None


class TimelineItem(BaseModel):
    event_id: uuid.UUID
    message_id: str
    type: str
    event: str | None
    channel: str
    occurred_at: datetime
    received_at: datetime
    stage: str | None = Field(
        description="The customer's journey stage once this event was applied."
    )
    properties: dict[str, Any]
    context: dict[str, Any]
    flags: list[str] = Field(default_factory=list)


class TimelinePage(BaseModel):
    customer_id: uuid.UUID
    requested_id: RequestedId = None
    merged: Merged = False
    items: list[TimelineItem]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null at the end."
    )
