"""Query parameters and response shapes of the analytics API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from app.kit.query import QueryModel
from app.timeline.schemas import Instant


def _after(value: datetime | None, info: ValidationInfo, earlier: str) -> datetime | None:
    """``value`` if it is later than the field ``earlier`` (when both are given)."""
    start = info.data.get(earlier)
    if value is not None and start is not None and value <= start:
        raise ValueError(f"must be later than `{earlier}`")
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


def share(part: int, whole: int) -> float:
    """``part / whole`` to 4 decimal places; 0 when there is no whole."""
    return round(part / whole, 4) if whole else 0.0
