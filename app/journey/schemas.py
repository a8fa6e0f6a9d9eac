"""Response shapes of the journey API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.customers.schemas import Merged, RequestedId
from app.kit.query import Instant, QueryModel

# Transitions a journey page holds by default, and at most: a customer's stage changes a few
# times in a usual history, but a bot or a shared device can change it thousands of times.
JOURNEY_PAGE = 100
MAX_JOURNEY_PAGE = 1_000


class JourneyParams(QueryModel):
    """The journey's query parameters: a page of transitions, oldest first."""

    limit: int = Field(JOURNEY_PAGE, ge=1, le=MAX_JOURNEY_PAGE)
    cursor: str | None = Field(
        None, max_length=200, description="`next_cursor` of the page before."
    )
    since: Instant | None = Field(None, description="Transitions entered at or after this time.")
    until: Instant | None = Field(None, description="Transitions entered before this time.")


class TransitionOut(BaseModel):
    from_stage: str | None = Field(description="The stage before; null for the first one.")
    to_stage: str
    entered_at: datetime = Field(description="`occurred_at` of the event that caused it.")
    exited_at: datetime | None = Field(
        description="When the next transition began; null while current."
    )
    event_id: uuid.UUID = Field(description="The touchpoint that caused the change.")
    channel: str
    event: str | None
    rule: str | None = Field(
        default=None,
        description="Id of the model rule that assigned `to_stage` (`first_touch` for a "
        "new customer's first event).",
    )


class CustomerJourney(BaseModel):
    customer_id: uuid.UUID
    requested_id: RequestedId = None
    merged: Merged = False
    model: str = Field(description="Name of the active journey model.")
    up_to_date: bool = Field(
        description="False while this journey was computed by another model (before a "
        "model change); the customer's next event or `percorso journey rebuild` fixes it."
    )
    current_stage: str | None = Field(description="Stage of the latest stage-bearing event.")
    furthest_stage: str | None = Field(description="The highest stage ever reached.")
    transitions: list[TransitionOut] = Field(
        description="Changes of stage, oldest first: a page of them (`limit`, `next_cursor`)."
    )
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (later) page; null at the end."
    )


class PredicateOut(BaseModel):
    property: str = Field(examples=["order.total"])
    op: str = Field(examples=["gt"])
    value: Any = None


class RuleOut(BaseModel):
    id: str
    stage: str
    description: str | None = None
    event: list[str] | None = Field(description="Event-name globs (case-insensitive); null: any.")
    type: list[str] | None = Field(description="Event types; null: any.")
    channel: list[str] | None = Field(description="Channels; null: any.")
    where: list[PredicateOut] = Field(description="Property predicates; all must hold.")
    count: dict[str, int] | None = Field(
        description="Condition on how many of the customer's events matched this rule so far "
        "(keys: eq, gte, gt, lte, lt)."
    )


class JourneyModelOut(BaseModel):
    name: str
    description: str | None
    source: str = Field(description="The model file, or `preset:<name>`.")
    fingerprint: str = Field(description="Changes whenever stage assignment would change.")
    stages: list[str] = Field(description="In journey order.")
    first_touch: str | None = Field(description="Stage of a new customer's first event.")
    rules: list[RuleOut] = Field(description="Checked in order; the first match wins.")
