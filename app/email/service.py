"""Email opens and clicks as touchpoints: a verified token becomes a Segment-shaped
``track`` call and goes through the same builder as every other call."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.auth.service import SourceInfo
from app.email import machine
from app.email.tokens import EmailToken
from app.identity.identifiers import IdentityConfig
from app.ingest import service
from app.touchpoint import Channel, Touchpoint

OPENED = "Email Opened"
CLICKED = "Email Link Clicked"


def recipient_fields(kind: str, value: str) -> dict[str, Any]:
    """Where a recipient identifier goes in a Segment call, so the identity extractor
    finds it: userId / anonymousId, ``context.traits`` for email, phone and crm_id,
    ``context.externalIds`` for any other kind."""
    if kind == "user_id":
        return {"userId": value}
    if kind == "anonymous_id":
        return {"anonymousId": value}
    if kind in ("email", "phone", "crm_id"):
        return {"context": {"traits": {kind: value}}}
    return {"context": {"externalIds": [{"id": value, "type": kind, "collection": "users"}]}}


def email_touchpoint(
    token: EmailToken,
    event: str,
    *,
    source: SourceInfo,
    received_at: datetime,
    identity: IdentityConfig,
    request_context: dict[str, Any],
    machine_reason: str | None,
) -> Touchpoint | None:
    """The touchpoint of one open or click, or ``None`` when the token's recipient no
    longer yields a usable identifier (e.g. a value blocked since the send)."""
    fields = recipient_fields(token.kind, token.value)
    context = {**fields.pop("context", {}), "channel": Channel.email.value}
    properties: dict[str, Any] = {}
    if token.campaign is not None:
        properties["campaign"] = token.campaign
    if token.url is not None:
        properties["url"] = token.url
    if token.sent_at is not None:
        properties["sentAt"] = token.sent_at.isoformat()
    raw = {"event": event, "properties": properties, "context": context, **fields}
    touchpoints, _ = service.build_all(
        [raw],
        call_type="track",
        source=source,
        received_at=received_at,
        identity=identity,
        request_context=request_context,
        ids_optional=True,
    )
    if not touchpoints:
        return None
    touchpoint = touchpoints[0]
    touchpoint.flags.extend(machine.flags(machine_reason))
    return touchpoint
