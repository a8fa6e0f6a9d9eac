"""Response shapes of the profile API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class IdentityOut(BaseModel):
    kind: str = Field(examples=["email"])
    value: str = Field(examples=["ada@example.com"])


class Profile(BaseModel):
    id: uuid.UUID
    requested_id: uuid.UUID | None = Field(
        default=None, description="The id that was asked for, when it was merged into `id`."
    )
    merged: bool = Field(
        default=False, description="True when `requested_id` was merged into `id`."
    )
    identities: list[IdentityOut]
    traits: dict[str, Any]
    stage: str | None = Field(description="Current journey stage.")
    furthest_stage: str | None
    first_seen_at: datetime
    last_seen_at: datetime
    event_count: int
    channel_counts: dict[str, int]
