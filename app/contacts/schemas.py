"""Shapes of the CRM contact sync API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.customers.schemas import (
    IdentitiesTruncated,
    IdentityCount,
    IdentityCounts,
    ListedIdentities,
)
from app.ingest.schemas import Id, Timestamp
from app.openapi import inline

MAX_CONTACTS = 1_000


class ExternalId(BaseModel):
    """Segment's ``context.externalIds`` entry."""

    id: Id
    type: str = Field(examples=["loyalty_card"])
    collection: str = "users"
    encoding: str = "none"


class Contact(BaseModel):
    """One CRM contact. At least one of ``crm_id``, ``email``, ``phone`` or
    ``external_ids`` must identify the person."""

    model_config = ConfigDict(extra="forbid")

    crm_id: Id | None = Field(default=None, examples=["0035e00000XyZ1A"])
    email: str | None = Field(default=None, max_length=320, examples=["ada@example.com"])
    phone: str | None = Field(default=None, max_length=64, examples=["+39 333 123 4567"])
    traits: dict[str, Any] = Field(default_factory=dict, examples=[{"name": "Ada", "tier": "gold"}])
    external_ids: list[ExternalId] = Field(default_factory=list, max_length=50)
    updated_at: Timestamp | None = Field(
        default=None, description="When the CRM last changed the contact (the event time)."
    )
    message_id: str | None = Field(
        default=None, max_length=100, description="Idempotency key; generated when missing."
    )


class ContactsRequest(BaseModel):
    # Each contact is validated on its own (a verdict each), so the request takes any objects.
    contacts: list[dict[str, Any]] = Field(max_length=MAX_CONTACTS)


def contacts_request_schema() -> dict[str, Any]:
    """:class:`ContactsRequest` for the document: its items are :class:`Contact`, which
    needs at least one identifier (as ``app.contacts.service.contact_message`` checks)."""
    schema = ContactsRequest.model_json_schema()
    contact = inline(Contact.model_json_schema())
    contact["anyOf"] = [
        {"required": ["crm_id"], "properties": {"crm_id": {"not": {"type": "null"}}}},
        *({"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}
          for name in ("email", "phone")),
        {"required": ["external_ids"], "properties": {"external_ids": {"minItems": 1}}},
    ]  # fmt: skip
    schema["properties"]["contacts"]["items"] = contact
    return schema


class ContactVerdict(BaseModel):
    index: int
    status: Literal["accepted", "rejected"]
    message_id: str | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)


class ContactsResponse(BaseModel):
    success: bool = True
    accepted: int
    rejected: int
    results: list[ContactVerdict]


class ContactChange(BaseModel):
    customer_id: uuid.UUID
    merged_into: uuid.UUID | None = Field(
        description="Set when this customer was merged: the survivor to use instead."
    )
    identities: ListedIdentities
    identity_counts: IdentityCounts
    identity_count: IdentityCount
    identities_truncated: IdentitiesTruncated
    traits: dict[str, Any]
    stage: str | None
    furthest_stage: str | None
    updated_at: datetime
    erased: bool = Field(
        False,
        description="The customer was erased (`DELETE /v1/customers/{id}`): erase it too."
        " Nothing else is left of it: no identities, traits or stage.",
    )


class ChangesPage(BaseModel):
    items: list[ContactChange]
    next_cursor: str = Field(description="Pass as `since` to get what changed after this page.")
