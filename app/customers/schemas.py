"""Response shapes of the profile API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.identity.identifiers import MAX_KIND_LENGTH, MAX_VALUE_LENGTH, normalise_kind
from app.kit.query import QueryModel

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


# A body that names an identifier (the lookup's, the suppression list's): a few hundred bytes.
MAX_IDENTIFIER_BYTES = 4096


class IdentifierIn(BaseModel):
    """One identifier, normalised as events' are before it is looked up or stored:
    `Ada@Example.com` is `ada@example.com`, kind `Loyalty Card` is `loyalty_card`."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=MAX_KIND_LENGTH, examples=["email"])
    value: str = Field(min_length=1, max_length=MAX_VALUE_LENGTH, examples=["ada@example.com"])


class IdentityOut(BaseModel):
    kind: str = Field(examples=["email"])
    value: str = Field(examples=["ada@example.com"])


# A profile (and a change in the CRM feed) lists a customer's identities up to these bounds:
# a shared device or a scraper can hold tens of thousands of anonymous ids, which made every
# read of that profile megabytes long. The kinds a person has a few of (user id, email, phone,
# CRM id: see the merge limits) are listed whole; `/v1/customers/{id}/identities` pages
# through all of them.
PROFILE_IDENTITIES_PER_KIND = 10
PROFILE_IDENTITIES = 100
PROFILE_IDENTITY_KINDS = 100  # kinds in `identity_counts`: custom kinds are any names

# Identities a page of `/v1/customers/{id}/identities` holds by default, and at most.
IDENTITIES_PAGE = 100
MAX_IDENTITIES_PAGE = 1_000

ListedIdentities = Annotated[
    list[IdentityOut],
    Field(
        description=f"The customer's identities by kind, then value: at most "
        f"{PROFILE_IDENTITIES_PER_KIND} of each kind (the first by value) and "
        f"{PROFILE_IDENTITIES} in all. `/v1/customers/{{id}}/identities` lists every one."
    ),
]
IdentityCounts = Annotated[
    dict[str, int],
    Field(
        description=f"How many identities of each kind the customer holds (of its first "
        f"{PROFILE_IDENTITY_KINDS} kinds by name), listed or not.",
        examples=[{"anonymous_id": 48211, "email": 1, "user_id": 1}],
    ),
]
IdentityCount = Annotated[int, Field(description="How many identities the customer holds.")]
IdentitiesTruncated = Annotated[
    bool, Field(description="True when `identities` leaves some of them out.")
]


def _kind(raw: str) -> str:
    """A kind as events name them (``Loyalty Card`` is ``loyalty_card``)."""
    try:
        return normalise_kind(raw)
    except ValueError:
        raise ValueError(
            "not an identifier kind: 1 to 64 letters, digits and _ (spaces, dashes and dots "
            "read as _)"
        ) from None


class IdentitiesParams(QueryModel):
    """The identity list's query parameters."""

    kind: Annotated[str, Field(max_length=200), AfterValidator(_kind)] | None = Field(
        None, description="Only identities of this kind.", examples=["anonymous_id"]
    )
    limit: int = Field(IDENTITIES_PAGE, ge=1, le=MAX_IDENTITIES_PAGE)
    # Its position holds a kind and a value (64 and 255 characters), JSON-escaped in base64.
    cursor: str | None = Field(
        None, max_length=4096, description="`next_cursor` of the page before."
    )


class IdentitiesPage(BaseModel):
    customer_id: uuid.UUID
    requested_id: RequestedId = None
    merged: Merged = False
    items: list[IdentityOut] = Field(description="By kind, then value.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class Profile(BaseModel):
    id: uuid.UUID
    requested_id: RequestedId = None
    merged: Merged = False
    identities: ListedIdentities
    identity_counts: IdentityCounts
    identity_count: IdentityCount
    identities_truncated: IdentitiesTruncated
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
