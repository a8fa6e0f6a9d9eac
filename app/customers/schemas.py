"""Response shapes of the profile API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

# Every read by customer id answers for the survivor when the id was merged, and says so.
RequestedId = Annotated[
    uuid.UUID | None,
    Field(description="The id that was asked for, when it was merged into the one answering."),
]
Merged = Annotated[bool, Field(description="True when `requested_id` was merged.")]


def answered_for(requested: uuid.UUID | None, survivor: uuid.UUID) -> dict[str, Any]:
    """The ``requested_id`` and ``merged`` fields of an answer about ``survivor``."""
    merged = requested is not None and requested != survivor
    return {"requested_id": requested if merged else None, "merged": merged}


class IdentityOut(BaseModel):
    kind: str = Field(examples=["email"])
    value: str = Field(examples=["ada@example.com"])


class Profile(BaseModel):
    id: uuid.UUID
    requested_id: RequestedId = None
    merged: Merged = False
    identities: list[IdentityOut]
    traits: dict[str, Any]
    stage: str | None = Field(description="Current journey stage.")
    furthest_stage: str | None
    first_seen_at: datetime
    last_seen_at: datetime
    event_count: int
    channel_counts: dict[str, int]


class ErasureCounts(BaseModel):
    customers: int = Field(description="The customer and those merged into it.")
    events: int
    stage_transitions: int
    identities: int
    merges: int
    dead_letters: int = Field(description="Dead letters that held one of its identifiers.")
    suppressed: int = Field(description="Its identifiers now on the suppression list.")


class Erasure(BaseModel):
    """What an erasure removed: the audit record Percorso keeps of it, which holds no
    identifier. Asking again for an erased id answers the same record."""

    id: int = Field(description="The erasure's number in the audit.")
    customer_id: uuid.UUID = Field(description="The customer erased (the survivor).")
    requested_id: uuid.UUID = Field(description="The id that was asked for.")
    erased_at: datetime
    suppress: bool = Field(description="Whether its identifiers were suppressed.")
    counts: ErasureCounts
