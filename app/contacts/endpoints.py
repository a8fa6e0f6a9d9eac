"""CRM sync API: contact upserts (write key) and the changes feed (read token)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app.auth.dependencies import (
    WRITE_KEY_SECURITY,
    ReadAccess,
    authenticator,
    presented_write_key,
)
from app.contacts import service
from app.contacts.schemas import (
    MAX_CONTACTS,
    ChangesPage,
    ContactsResponse,
    ContactVerdict,
    contacts_request_schema,
)
from app.customers.endpoints import TOKEN_ERRORS
from app.db import ReadSessionDep, read_connection
from app.errors import InvalidRequest, PayloadTooLarge
from app.ingest import service as ingest
from app.ingest.body import read_json
from app.ingest.endpoints import ERRORS, IdentityDep, PublisherDep, admit, sender_context

router = APIRouter(prefix="/v1/contacts", tags=["crm"])

MAX_CONTACTS_BYTES = 4 * 1024 * 1024


@router.post(
    "",
    response_model=ContactsResponse,
    # Read, authenticated and admitted as a tracking call is: its refusals, but for the 400.
    responses={
        **ERRORS,
        400: {"description": "Invalid body, or no valid contact (each one's errors in `errors`)."},
    },
    openapi_extra={
        "security": WRITE_KEY_SECURITY,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": contacts_request_schema(),
                    "example": {
                        "contacts": [
                            {
                                "crm_id": "0035e00000XyZ1A",
                                "email": "ada@example.com",
                                "phone": "+39 333 123 4567",
                                "traits": {"name": "Ada Lovelace", "tier": "gold"},
                                "external_ids": [{"id": "LC-991", "type": "loyalty_card"}],
                            }
                        ]
                    },
                }
            },
        },
    },
)
async def upsert_contacts(
    request: Request, publisher: PublisherDep, identity: IdentityDep
) -> ContactsResponse:
    """Upsert up to 1,000 contacts. Each travels through the pipeline as an `identify` call
    on the `crm` channel, stitched by CRM id, email, phone and external ids. The answer
    gives a verdict per contact; valid ones are accepted even when others are rejected. A
    contact with a suppressed identifier (an erased person's, or one suppressed on request:
    `/v1/suppressions`) is rejected, the identifier's field named."""
    raw = await read_json(request, MAX_CONTACTS_BYTES)
    key = presented_write_key(request)
    if key is None and isinstance(raw, dict) and isinstance(raw.get("writeKey"), str):
        key = raw["writeKey"]
    source = await authenticator(request).source(key)
    if not isinstance(raw, dict) or not isinstance(raw.get("contacts"), list):
        raise InvalidRequest("the body is a JSON object with a `contacts` array")
    contacts: list[Any] = raw["contacts"]
    if len(contacts) > MAX_CONTACTS:
        raise PayloadTooLarge(f"at most {MAX_CONTACTS} contacts per call, not {len(contacts)}")
    admit(request, source, max(1, len(contacts)))

    verdicts: dict[int, ContactVerdict] = {}
    messages: list[dict[str, Any]] = []
    positions: list[int] = []
    for index, contact in enumerate(contacts):
        try:
            messages.append(service.contact_message(contact))
            positions.append(index)
        except service.ContactRejected as exc:
            verdicts[index] = ContactVerdict(index=index, status="rejected", errors=exc.errors)
    touchpoints, rejections = ingest.build_all(
        messages,
        call_type="identify",
        source=source,
        received_at=datetime.now(UTC),
        identity=identity,
        request_context=sender_context(request),
        ids_optional=True,
    )
    for r in rejections:
        index = positions[r.index]
        verdicts[index] = ContactVerdict(
            index=index, status="rejected", errors=[e.model_dump() for e in r.errors]
        )
    accepted_positions = [p for p in positions if p not in verdicts]
    async with read_connection(request) as connection:
        refused = await service.suppressed_contacts(connection, touchpoints)
    for position, tp, errors in zip(accepted_positions, touchpoints, refused, strict=True):
        if errors:
            verdicts[position] = ContactVerdict(index=position, status="rejected", errors=errors)
        else:
            verdicts[position] = ContactVerdict(
                index=position, status="accepted", message_id=tp.message_id
            )
    touchpoints = [tp for tp, errors in zip(touchpoints, refused, strict=True) if not errors]
    results = [verdicts[i] for i in range(len(contacts))]
    if not touchpoints:
        raise InvalidRequest(
            "no contact in the request was valid; nothing was stored",
            errors=[v.model_dump() for v in results],
        )
    await publisher.publish([(ingest.partition_key(tp), tp.to_bytes()) for tp in touchpoints])
    return ContactsResponse(
        accepted=len(touchpoints), rejected=len(contacts) - len(touchpoints), results=results
    )


@router.get(
    "/changes",
    response_model=ChangesPage,
    responses={**TOKEN_ERRORS, 400: {"description": "`since` is not a cursor this API issued."}},
)
async def contact_changes(
    session: ReadSessionDep,
    _: ReadAccess,
    since: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ChangesPage:
    """Profiles changed since the cursor — traits, identities, stage, merges (a merged
    customer appears with `merged_into`, the survivor; an erased one with `erased: true`,
    each of its ids, so the CRM can erase it too) — so a CRM can pull updates back.
    Poll with the returned `next_cursor`; an empty page means nothing new yet."""
    return await service.changes(session, since, limit)
