"""Query parameters and response shapes of the analytics API."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
)

from app.kit.query import Instant, QueryModel, storable
from app.touchpoint import EventType


def _after(value: datetime | None, info: ValidationInfo, earlier: str) -> datetime | None:
    """``value`` if it is later than the field ``earlier`` (when both are given)."""
    start = info.data.get(earlier)
    if value is not None and start is not None and value <= start:
        raise ValueError(f"must be later than `{earlier}`")
    return value


# The longest window an analytics query may cover, and its conversion or lookback windows.
MAX_WINDOW: Final = timedelta(days=366)
StageName = Annotated[str, Field(min_length=1, max_length=200)]


EventName = Annotated[str, Field(min_length=1, max_length=200), storable("event name")]


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass  # an ISO 8601 duration, or nothing pydantic reads: it says which
    return value


# A length of time: an ISO 8601 duration (`P7D`, `PT1H30M`) or a number of seconds.
Duration = Annotated[timedelta, BeforeValidator(_seconds)]


class Window(QueryModel):
    """A required time window ``[since, until)`` of at most :data:`MAX_WINDOW`."""

    since: Instant = Field(description="Start of the window (included).")
    until: Instant = Field(description="End of the window (excluded); at most 366 days later.")

    @field_validator("until")
    @classmethod
    def _bounded(cls, value: datetime, info: ValidationInfo) -> datetime:
        since = info.data.get("since")
        if since is not None:
            if value <= since:
                raise ValueError("must be later than `since`")
            if value - since > MAX_WINDOW:
                raise ValueError("the window [since, until) may cover at most 366 days")
        return value


class StagesParams(QueryModel):
    """The stage distribution's parameters: an optional window on `last_seen_at`."""

    last_seen_since: Instant | None = Field(
        None, description="Only customers last seen at or after this time."
    )
    last_seen_until: Instant | None = Field(
        None, description="Only customers last seen before this time."
    )

    @field_validator("last_seen_until")
    @classmethod
    def _window(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        return _after(value, info, "last_seen_since")


class StageCount(BaseModel):
    stage: str
    customers: int
    share: float = Field(description="`customers` over all customers counted, 0 to 1.")


class StageDistribution(BaseModel):
    stages: list[StageCount] = Field(
        description="Every stage of the active model, in journey order (0 included)."
    )
    no_stage: int = Field(description="Customers without a stage yet.")
    other_stage: int = Field(
        description="Customers in a stage the active model does not have: their journey was "
        "computed by another model (`percorso journey rebuild` recomputes them)."
    )


class StagesOut(BaseModel):
    model: str = Field(description="Name of the active journey model.")
    last_seen_since: datetime | None
    last_seen_until: datetime | None
    customers: int = Field(description="Live customers counted (merged-away ids are not).")
    current: StageDistribution = Field(description="By current stage.")
    furthest: StageDistribution = Field(description="By furthest stage reached.")


class FunnelParams(Window):
    """The funnel's parameters: the window its first step is entered in, the steps, and a
    conversion window."""

    stages: list[StageName] | None = Field(
        None,
        min_length=2,
        max_length=20,
        description="The funnel's steps (repeat the parameter): 2 to 20 of the model's "
        "stages, in the model's order. Default: every stage of the model.",
    )
    within: Duration | None = Field(
        None,
        ge=timedelta(seconds=1),
        le=MAX_WINDOW,
        description="Conversion window: a later step counts only if entered at most this "
        "long after the first step (ISO 8601 duration, `P7D`, or seconds). Default: no limit.",
    )


class FunnelStep(BaseModel):
    stage: str
    customers: int = Field(description="Customers who reached this step, in the funnel's order.")
    conversion_from_previous: float | None = Field(
        description="`customers` over the previous step's, 0 to 1; null for the first step."
    )
    conversion_from_first: float = Field(description="`customers` over the first step's.")
    median_seconds_from_previous: float | None = Field(
        description="Median time from entering the previous step to entering this one, in "
        "seconds; null for the first step and where nobody reached it."
    )
    p90_seconds_from_previous: float | None = Field(
        description="90th percentile of that time, in seconds."
    )


class FunnelOut(BaseModel):
    model: str
    since: datetime
    until: datetime
    within_seconds: float | None = Field(description="The conversion window; null: none.")
    steps: list[FunnelStep]


class TouchpointsParams(Window):
    """The touchpoint matrix's parameters: the window events occurred in, and filters."""

    type: list[EventType] | None = Field(
        None, description="Only events of these types (repeat the parameter)."
    )
    event: list[EventName] | None = Field(
        None, max_length=20, description="Only events of these names (exact; repeatable)."
    )
    include_machine: bool = Field(
        False,
        description="Count machine activity too (email opens by privacy proxies, clicks by "
        "link scanners: events flagged `machine_activity`).",
    )


class Count(BaseModel):
    events: int
    customers: int = Field(description="Distinct (live) customers.")


class TouchpointCell(Count):
    channel: str
    stage: str | None = Field(description="`events.stage`; null: the customer had no stage.")


class ChannelCount(Count):
    channel: str


class StageTotal(Count):
    stage: str | None


class TouchpointsOut(BaseModel):
    model: str
    since: datetime
    until: datetime
    channels: list[str] = Field(description="Every channel, in a fixed order.")
    stages: list[str | None] = Field(
        description="The model's stages in order, then any other stage events carry (null: "
        "no stage; a stage of another model) that has events in the window."
    )
    cells: list[TouchpointCell] = Field(
        description="Every channel by every stage (`channels` by `stages`, channel-major), "
        "zeros included."
    )
    by_channel: list[ChannelCount] = Field(description="Row totals, in `channels` order.")
    by_stage: list[StageTotal] = Field(description="Column totals, in `stages` order.")
    total: Count


AttributionModel = Literal["first", "last", "linear", "time_decay"]
# What a touchpoint is credited to: its channel, or a field of Segment's `context.campaign`
# (the UTM parameters analytics.js reads from the page's URL).
Dimension = Literal["channel", "campaign.source", "campaign.medium", "campaign.name"]


class AttributionParams(Window):
    """Attribution's parameters: what a conversion is, the window conversions happened in,
    how far back touchpoints count, the model and the dimension credited."""

    stage: StageName | None = Field(
        None,
        description="A conversion is an entry into this stage (default `purchase`, when "
        "`event` is not given).",
    )
    event: EventName | None = Field(
        None, description="A conversion is an event of this name (exact), instead of a stage."
    )
    model: AttributionModel = Field(
        "last",
        description="`first` or `last` touch (all the credit to one touchpoint), `linear` "
        "(shared equally) or `time_decay` (halved every `half_life` back from the conversion).",
    )
    dimension: Dimension = Field(
        "channel",
        description="What gets the credit: the touchpoint's channel, or its "
        "`context.campaign` source, medium or name (utm_source, utm_medium, utm_campaign), "
        "where it is a string or a number that is not blank; Percorso's own email opens and "
        "clicks have their link's campaign as `campaign.name`.",
    )
    lookback: Duration = Field(
        timedelta(days=30),
        ge=timedelta(seconds=1),
        le=timedelta(days=90),
        description="How long before a conversion its touchpoints count (ISO 8601 duration "
        "or seconds; up to 90 days).",
    )
    half_life: Duration = Field(
        timedelta(days=7),
        ge=timedelta(minutes=1),
        le=MAX_WINDOW,
        description="`time_decay` only: a touchpoint this much older than another gets half "
        "its weight.",
    )
    limit: int = Field(50, ge=1, le=500, description="Most values listed; the rest in `other`.")
    include_machine: bool = Field(
        False, description="Count machine activity as touchpoints (and conversions) too."
    )


class CreditOut(BaseModel):
    value: str
    credit: float = Field(description="Conversions credited to this value (fractions of one).")
    touchpoints: int = Field(
        description="Touchpoints with this value in a conversion's lookback, once for each "
        "conversion (a touchpoint before two conversions counts twice)."
    )


class OtherCredit(BaseModel):
    values: int = Field(description="Values beyond `limit`.")
    credit: float
    touchpoints: int


class AttributionOut(BaseModel):
    model: AttributionModel
    dimension: Dimension
    stage: str | None = Field(description="The conversion stage; null for an event.")
    event: str | None = Field(description="The conversion event; null for a stage.")
    since: datetime
    until: datetime
    lookback_seconds: float
    half_life_seconds: float | None = Field(description="`time_decay` only.")
    conversions: int = Field(description="Conversions in the window.")
    attributed: int = Field(
        description="Conversions with at least one touchpoint: the credits add up to it."
    )
    unattributed: int = Field(description="Conversions without a touchpoint.")
    values: list[CreditOut] = Field(description="Most credit first (then by value).")
    other: OtherCredit


class CartsParams(QueryModel):
    """Abandoned carts' parameters: how long a cart must have been left, the window its
    last activity is looked for in, and the page."""

    idle: Duration = Field(
        timedelta(hours=1),
        ge=timedelta(minutes=1),
        le=timedelta(days=30),
        description="A cart is abandoned once its last activity is this old (ISO 8601 "
        "duration or seconds; 1 minute to 30 days).",
    )
    as_of: Instant | None = Field(
        None, description="The moment to look from (default: now); later events are ignored."
    )
    since: Instant | None = Field(
        None,
        description="Only carts last active at or after this time (default: 30 days before "
        "`as_of`; at most 366 days before it).",
    )
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200)


class AbandonedCart(BaseModel):
    customer_id: uuid.UUID
    event_id: uuid.UUID = Field(description="The customer's last cart event.")
    event: str = Field(examples=["Checkout Started"])
    channel: str
    occurred_at: datetime
    products: list[dict[str, Any]] = Field(
        description="The event's `products`; for `Product Added` or `Product Removed`, its "
        "properties (the product)."
    )
    value: float | None = Field(
        description="`value`, `revenue` or `total` of the event, or a product's `price` times "
        "`quantity`; null where none is a number."
    )
    currency: str | None
    properties: dict[str, Any]


class AbandonedCartsOut(BaseModel):
    as_of: datetime
    since: datetime
    idle_seconds: float
    items: list[AbandonedCart] = Field(description="Newest cart activity first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` (with the same parameters, and this answer's `as_of` "
        "if you gave none) for the next page; null at the end."
    )


def share(part: int, whole: int) -> float:
    """``part / whole`` to 4 decimal places; 0 when there is no whole."""
    return round(part / whole, 4) if whole else 0.0
