"""Turning Segment-shaped calls into canonical touchpoints.

Pure functions: no I/O. The endpoint validates, builds touchpoints here, then publishes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from app.auth.service import SourceInfo
from app.errors import validation_errors
from app.identity.identifiers import IdentityConfig, extract_identifiers
from app.ingest.schemas import MAX_EVENT_BYTES, FieldError, Rejection, SegmentMessage
from app.touchpoint import Channel, Touchpoint, new_event_id

# A corrected event time further ahead of the server clock than this is not believed.
MAX_FUTURE_SKEW = timedelta(minutes=5)
_CHANNELS = frozenset(c.value for c in Channel)


class EventRejected(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(errors[0].message if errors else "invalid event")
        self.errors = errors


def occurred_at(msg: SegmentMessage, received_at: datetime) -> tuple[datetime, list[str]]:
    """The event time, corrected for the sending device's clock as Segment does:
    ``timestamp + (receivedAt - sentAt)``. Far-future results are clamped and flagged."""
    flags: list[str] = []
    base = msg.originalTimestamp or msg.timestamp
    if base is None:
        return received_at, flags
    base = _aware(base)
    if msg.sentAt is not None:
        base = base + (received_at - _aware(msg.sentAt))
        flags.append("clock_skew_corrected")
    if base > received_at + MAX_FUTURE_SKEW:
        flags.append("timestamp_clamped")
        base = received_at
    return base, flags


def _aware(value: datetime) -> datetime:
    # Segment treats a timestamp without an offset as UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def validate_message(raw: Any, call_type: str | None) -> SegmentMessage:
    """Validate one call. ``call_type`` is fixed by the path (``/v1/track``) or taken from
    the item's ``type`` (``/v1/batch``)."""
    if not isinstance(raw, dict):
        raise EventRejected([FieldError(field=None, message="an event is a JSON object")])
    if call_type is not None:
        raw = {**raw, "type": call_type}
    elif "type" not in raw:
        raise EventRejected([FieldError(field="type", message="each batch item needs a type")])
    try:
        return SegmentMessage.model_validate(raw)
    except ValidationError as exc:
        raise EventRejected([FieldError(**e) for e in validation_errors(exc.errors())]) from None


def build_touchpoint(
    msg: SegmentMessage,
    *,
    source: SourceInfo,
    received_at: datetime,
    identity: IdentityConfig,
    request_context: dict[str, Any],
    batch_context: dict[str, Any] | None = None,
    sent_at: datetime | None = None,
) -> Touchpoint:
    """Build the canonical touchpoint; raises :class:`EventRejected` when no usable
    identifier remains (every id blocked or malformed)."""
    assert msg.type is not None
    if sent_at is not None and msg.sentAt is None:
        msg = msg.model_copy(update={"sentAt": sent_at})
    context = {**(batch_context or {}), **(msg.context or {})}
    for key, value in request_context.items():
        context.setdefault(key, value)
    traits = msg.traits or {}
    extracted = extract_identifiers(
        type=msg.type,
        user_id=msg.userId,
        anonymous_id=msg.anonymousId,
        traits=traits,
        context=context,
        config=identity,
    )
    if not extracted.identifiers:
        raise EventRejected(
            [FieldError(field=r.kind, message=r.reason) for r in extracted.rejected]
            or [FieldError(field="userId", message="no usable identifier")]
        )
    when, flags = occurred_at(msg, received_at)
    flags.extend(f"rejected_identifier:{r.kind}" for r in extracted.rejected)
    requested = context.get("channel")
    channel = requested if isinstance(requested, str) and requested in _CHANNELS else source.channel
    properties = dict(msg.properties or {})
    if msg.type == "page" and msg.category:
        properties.setdefault("category", msg.category)
    if msg.type == "group":
        properties.setdefault("groupId", str(msg.groupId))
    if msg.type == "alias":
        properties.setdefault("previousId", str(msg.previousId))
    return Touchpoint(
        event_id=new_event_id(),
        message_id=msg.messageId or f"percorso-{new_event_id()}",
        source_id=source.id,
        channel=Channel(channel),
        type=msg.type,
        event=msg.event if msg.type == "track" else msg.name,
        user_id=None if msg.userId is None else str(msg.userId),
        anonymous_id=None if msg.anonymousId is None else str(msg.anonymousId),
        identifiers=extracted.identifiers,
        traits=traits,
        properties=properties,
        context=context,
        occurred_at=when,
        sent_at=_aware(msg.sentAt) if msg.sentAt else None,
        received_at=received_at,
        flags=flags,
    )


def partition_key(tp: Touchpoint) -> bytes:
    """Events of one browser or person share a partition, so the pipeline sees them in order."""
    key = (
        tp.anonymous_id
        or tp.user_id
        or (tp.identifiers[0].value if tp.identifiers else tp.message_id)
    )
    return key.encode()


def event_size_ok(raw: Any) -> bool:
    return len(orjson.dumps(raw)) <= MAX_EVENT_BYTES


def rejection(index: int, raw: Any, errors: list[FieldError]) -> Rejection:
    message_id = raw.get("messageId") if isinstance(raw, dict) else None
    return Rejection(
        index=index,
        messageId=message_id if isinstance(message_id, str) else None,
        errors=errors,
    )
