"""CRM contact sync: contacts in as ``identify`` calls through the pipeline, changes out
through a cursor that never skips a late commit."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import repository
from app.contacts.schemas import ChangesPage, Contact, ContactChange
from app.errors import InvalidRequest, validation_errors
from app.suppressions import service as suppressions
from app.touchpoint import Touchpoint

if TYPE_CHECKING:
    import asyncpg


class ContactRejected(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid contact")
        self.errors = errors


def contact_message(raw: Any) -> dict[str, Any]:
    """A contact as a Segment ``identify`` call on the CRM channel. Raises
    :class:`ContactRejected` for an invalid contact."""
    try:
        contact = Contact.model_validate(raw)
    except ValidationError as exc:
        raise ContactRejected(validation_errors(exc.errors())) from None
    if not (contact.crm_id is not None or contact.email or contact.phone or contact.external_ids):
        raise ContactRejected(
            [{"field": None, "message": "a contact needs a crm_id, email, phone or external_ids"}]
        )
    traits = dict(contact.traits)
    for key in ("crm_id", "email", "phone"):
        value = getattr(contact, key)
        if value is not None:
            traits[key] = value
    message: dict[str, Any] = {
        "type": "identify",
        "traits": traits,
        "context": {
            "channel": "crm",
            "externalIds": [e.model_dump() for e in contact.external_ids],
        },
    }
    if contact.updated_at is not None:
        message["timestamp"] = contact.updated_at.isoformat()
    if contact.message_id is not None:
        message["messageId"] = contact.message_id
    return message


# The contact's field an identifier of each built-in kind comes from (others: external ids).
_FIELD_OF_KIND = {"crm_id": "crm_id", "email": "email", "phone": "phone"}


async def suppressed_contacts(
    connection: asyncpg.Connection[Any], touchpoints: list[Touchpoint]
) -> list[list[dict[str, Any]]]:
    """Per contact (as its touchpoint), the errors of its suppressed identifiers: empty
    for a contact that may be stored. One statement for the whole request."""
    return [
        [
            {
                "field": _FIELD_OF_KIND.get(kind, "external_ids"),
                "message": f"this {kind} is suppressed (erased, or no longer to be"
                " processed): the contact is not stored",
            }
            for kind, _ in suppressed
        ]
        for suppressed in await suppressions.suppressed_of(connection, touchpoints)
    ]


# A change's transaction id is PostgreSQL's xid8: an unsigned 64-bit integer.
XID8_END = 2**64


def encode_cursor(xid: int, customer_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{xid}:{customer_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[int, uuid.UUID]:
    if not cursor:
        return 0, uuid.UUID(int=0)
    try:
        text, _, customer = (
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition(":")
        )
        xid = int(text)
        if not 0 <= xid < XID8_END:  # PostgreSQL 16 refuses it (a failed query), 15 wraps it
            raise ValueError(xid)
        return xid, uuid.UUID(customer)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest("`since` is not a cursor this API issued") from None


async def changes(session: AsyncSession, since: str | None, limit: int) -> ChangesPage:
    """Profiles changed (or erased) after ``since`` in commit-safe order. Only changes of
    transactions older than every transaction still running are returned, so a page never
    skips a change that commits later; the last cursor is returned even when the page is
    empty."""
    xid, after = decode_cursor(since)
    rows = await repository.changed_after(session, xid, after, limit)
    items = [
        ContactChange(
            customer_id=r.id,
            merged_into=r.merged_into,
            identities=r.identities,
            identity_counts=r.identity_counts,
            identity_count=r.identity_count,
            identities_truncated=r.identities_truncated,
            traits=r.traits,
            stage=r.current_stage,
            furthest_stage=r.furthest_stage,
            updated_at=r.updated_at,
            erased=r.erased,
        )
        for r in rows
    ]
    cursor = (
        encode_cursor(int(rows[-1].change_xid), rows[-1].id)
        if rows
        else since or encode_cursor(0, after)
    )
    return ChangesPage(items=items, next_cursor=cursor)
