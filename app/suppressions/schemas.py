"""Request and response shapes of the suppression API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class SuppressionOut(BaseModel):
    """A suppressed identifier. The value is not kept (only a SHA-256 of kind and value),
    so it is not shown either."""

    kind: str = Field(examples=["email"])
    reason: Literal["erasure", "request"] = Field(
        description="`erasure`: suppressed by an erasure; `request`: suppressed alone."
    )
    created_at: datetime = Field(description="Since when its events are dropped.")
