"""Request and response shapes of the suppression API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.identity.identifiers import MAX_KIND_LENGTH, MAX_VALUE_LENGTH

# A body is one identifier: a few hundred bytes at most.
MAX_BODY_BYTES = 4096


class IdentifierIn(BaseModel):
    """One identifier, normalised as events' are before it is looked up or stored:
    `Ada@Example.com` is `ada@example.com`, kind `Loyalty Card` is `loyalty_card`."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=MAX_KIND_LENGTH, examples=["email"])
    value: str = Field(min_length=1, max_length=MAX_VALUE_LENGTH, examples=["ada@example.com"])


class SuppressionOut(BaseModel):
    """A suppressed identifier. The value is not kept (only a SHA-256 of kind and value),
    so it is not shown either."""

    kind: str = Field(examples=["email"])
    reason: Literal["erasure", "request"] = Field(
        description="`erasure`: suppressed by an erasure; `request`: suppressed alone."
    )
    created_at: datetime = Field(description="Since when its events are dropped.")
