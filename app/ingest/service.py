"""Turning Segment-shaped calls into canonical touchpoints.

Pure functions: no I/O. The tracking endpoints, the email endpoints and the importer all
validate and build touchpoints here, then publish them; so every channel gets the same
rules (limits, identifiers, clock-skew correction, channel choice).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Required, TypedDict, TypeVar, Unpack

import msgspec
import orjson
from pydantic import TypeAdapter, ValidationError

from app.auth.service import SourceInfo
from app.errors import validation_errors
from app.identity.identifiers import (
    IdentityConfig,
    InvalidIdentifier,
    extract_identifiers,
    normalise,
)
from app.ingest.schemas import (
    IDS_OPTIONAL,
    MAX_EVENT_BYTES,
    MAX_NAME,
    TIMESTAMP_FIELDS,
    FieldError,
    Rejection,
    SegmentCall,
    SegmentMessage,
    missing_field,
)
from app.touchpoint import (
    SCHEMA_VERSION,
    Channel,
    Identifier,
    Touchpoint,
    new_event_id_str,
    wire_bytes,
)

# A corrected event time further ahead of the server clock than this is not believed.
MAX_FUTURE_SKEW = timedelta(minutes=5)
CHANNELS = frozenset(c.value for c in Channel)
# The calls that view something: a page, or a mobile app's screen.
_VIEWS = frozenset(("page", "screen"))


class EventRejected(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(errors[0].message if errors else "invalid event")
        self.errors = errors


def _occurred_at(
    base: datetime | None, sent_at: datetime | None, received_at: datetime
) -> tuple[datetime, list[str]]:
    """The event time in UTC, corrected for the sending device's clock as Segment does:
    ``timestamp + (receivedAt - sentAt)``. Far-future results, and times before year 1 in
    UTC, are clamped and flagged."""
    flags: list[str] = []
    if base is None:
        return received_at, flags
    base = _aware(base)
    if sent_at is not None:
        try:
            base = base + (received_at - _aware(sent_at))
        except OverflowError:  # a device clock off by millennia: nothing to believe
            return received_at, ["timestamp_clamped"]
        flags.append("clock_skew_corrected")
    if base.tzinfo is not UTC:
        # The instant in UTC: PostgreSQL reads offsets of at most 15:59 (-23:30 is valid ISO
        # 8601, and the pipeline's statements would refuse the event), and stores none.
        try:
            base = base.astimezone(UTC)
        except OverflowError:  # before year 1 in UTC
            return received_at, ["timestamp_clamped"]
    if base > received_at + MAX_FUTURE_SKEW:
        flags.append("timestamp_clamped")
        base = received_at
    return base, flags


def _aware(value: datetime) -> datetime:
    """The time with its offset as a standard-library ``timezone`` (the same instant and
    offset). Pydantic's parser attaches its own ``TzInfo``, whose offset every comparison,
    sort and subtraction asks for again through a slower path: the pipeline's stages and
    profiles sorted such times 25 times slower. Segment treats a time without an offset as
    UTC."""
    tz = value.tzinfo
    if tz is None:
        return value.replace(tzinfo=UTC)
    if type(tz) is timezone:
        return value
    offset = value.utcoffset()
    return value.replace(tzinfo=timezone(offset) if offset else UTC)


Call = SegmentMessage | SegmentCall


def validate_message(raw: Any, call_type: str | None, *, ids_optional: bool = False) -> Call:
    """Validate one call. ``call_type`` is fixed by the path (``/v1/track``) or taken from
    the item's ``type`` (``/v1/batch``). ``ids_optional`` lifts Segment's "userId or
    anonymousId" rule for server-built messages identified by email, phone or externalIds
    (an identifier is still required: :func:`build_event` checks).

    msgspec first (:class:`SegmentCall`); whatever it refuses, pydantic decides and
    words the errors (:class:`SegmentMessage`)."""
    if not isinstance(raw, dict):
        raise EventRejected([FieldError(field=None, message="an event is a JSON object")])
    if call_type is not None:
        raw = {**raw, "type": call_type}
    elif raw.get("type") is None:
        raise EventRejected([FieldError(field="type", message="each batch item needs a type")])
    call = _plainly_valid(raw, ids_optional)
    if call is not None:
        return call
    try:
        return SegmentMessage.model_validate(raw, context={IDS_OPTIONAL: ids_optional})
    except ValidationError as exc:
        raise EventRejected([FieldError(**e) for e in validation_errors(exc.errors())]) from None


_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def _plainly_valid(raw: dict[str, Any], ids_optional: bool) -> SegmentCall | None:
    """The call when msgspec, pydantic's datetime parser and :func:`missing_field` all
    accept it; otherwise None (pydantic then gives the verdict)."""
    try:
        call = msgspec.convert(raw, SegmentCall)
        for name in TIMESTAMP_FIELDS:
            value = getattr(call, name)
            if value is not None:
                setattr(call, name, _time(value))
    except (msgspec.ValidationError, ValidationError):
        return None
    if missing_field(call, ids_optional=ids_optional) is not None:
        return None
    return call


def _time(value: Any) -> datetime:
    """The time pydantic's datetime parser makes of ``value``. RFC 3339 text, which is what
    Segment's libraries send, is parsed by msgspec instead, at a quarter of the cost and
    with the offset as a standard-library ``timezone`` (see :func:`_aware`): the two agree
    on every such text up to microseconds, and for finer fractions, which msgspec rounds
    and pydantic truncates, pydantic parses it. Anything msgspec refuses goes to pydantic,
    which decides (it also takes Unix times, and other ISO 8601 forms)."""
    if type(value) is str:
        dot = value.find(".")
        if dot < 0 or not value[dot + 7 : dot + 8].isdigit():  # at most 6 digits after "."
            try:
                return msgspec.convert(value, datetime)
            except msgspec.ValidationError:
                pass
    return _DATETIME.validate_python(value)


class Arrival(TypedDict, total=False):
    """How calls arrived (everything but the calls): the options of :func:`build_all`,
    :func:`build_messages` and :func:`build_event`."""

    source: Required[SourceInfo]
    received_at: Required[datetime]
    identity: Required[IdentityConfig]
    request_context: Required[dict[str, Any]]
    batch_context: dict[str, Any] | None  # the batch envelope's context
    sent_at: datetime | None  # the batch envelope's sentAt
    # Lifts Segment's "userId or anonymousId" rule for server-built calls (see
    # validate_message); not used by build_event.
    ids_optional: bool
    # Calls stored before they came here (an import's rows): see build_event.
    replayed: bool


def build_event(msg: Call, arrival: Arrival, source_id: str) -> dict[str, Any]:
    """The canonical touchpoint as a plain dict, in :class:`Touchpoint` field order, its
    identifiers as :class:`Identifier`: ``Touchpoint.validate`` of it is the touchpoint
    (which takes the identifiers as they are), and :func:`wire_bytes` of it with the
    identifiers as JSON objects (:func:`_message`) is exactly that touchpoint's
    ``to_bytes()`` (the hot path skips building the model).
    Raises :class:`EventRejected` when no usable identifier remains (every id blocked or
    malformed). ``source_id`` is ``arrival["source"].id`` as text, made once per request."""
    assert msg.type is not None
    received_at = arrival["received_at"]
    message_sent_at = msg.sentAt if msg.sentAt is not None else arrival.get("sent_at")
    context = {**(arrival.get("batch_context") or {}), **(msg.context or {})}
    for key, value in arrival["request_context"].items():
        context.setdefault(key, value)
    traits = msg.traits or {}
    extracted = extract_identifiers(
        type=msg.type,
        user_id=msg.userId,
        anonymous_id=msg.anonymousId,
        traits=traits,
        context=context,
        config=arrival["identity"],
    )
    identifiers = extracted.identifiers  # a fresh list: _add_previous_id may extend it
    alias_flags = (
        _add_previous_id(identifiers, msg, arrival["identity"]) if msg.type == "alias" else None
    )
    if not identifiers:
        raise EventRejected(
            [FieldError(field=r.kind, message=r.reason) for r in extracted.rejected]
            or [FieldError(field="userId", message="no usable identifier")]
        )
    # Time flags, alias flags, rejected identifiers, channel, name: in that order.
    if arrival.get("replayed"):
        # A stored call's sentAt is when it was first sent, to another server: against this
        # clock it is no skew, only the call's age. Its time is its `timestamp`, which the
        # archives of Segment and RudderStack keep corrected already (Segment's advice for
        # historical imports), else `originalTimestamp`, as written.
        when, flags = _occurred_at(msg.timestamp or msg.originalTimestamp, None, received_at)
    else:
        when, flags = _occurred_at(
            msg.originalTimestamp or msg.timestamp, message_sent_at, received_at
        )
    if alias_flags:
        flags += alias_flags
    if extracted.rejected:
        flags += [f"rejected_identifier:{r.kind}" for r in extracted.rejected]
    channel = arrival["source"].channel
    requested = context.get("channel")
    if isinstance(requested, str) and requested in CHANNELS:
        channel = requested
    elif requested is not None:
        flags.append("unknown_channel")
    if channel not in CHANNELS:
        Channel(channel)  # a source channel Percorso does not know: ValueError, as before
    properties = dict(msg.properties or {})
    if msg.type in _VIEWS and msg.category:
        properties.setdefault("category", msg.category)
    if msg.type == "group":
        properties.setdefault("groupId", str(msg.groupId))
    if msg.type == "alias":
        properties.setdefault("previousId", str(msg.previousId))
    if msg.type == "track":
        name = msg.event
    else:
        name = msg.name
        if name is None and msg.type in _VIEWS:
            name = msg.event  # where RudderStack's Android and iOS SDKs name a screen
    if name is not None and len(name) > MAX_NAME:
        name = name[:MAX_NAME]
        flags.append("name_truncated")
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": new_event_id_str(),
        "message_id": msg.messageId or f"percorso-{new_event_id_str()}",
        "source_id": source_id,
        "channel": channel,
        "type": msg.type,
        "event": name,
        "user_id": None if msg.userId is None else str(msg.userId),
        "anonymous_id": None if msg.anonymousId is None else str(msg.anonymousId),
        "identifiers": identifiers,
        "traits": traits,
        "properties": properties,
        "context": context,
        "occurred_at": when,
        "sent_at": _aware(message_sent_at) if message_sent_at else None,
        "received_at": received_at,
        "flags": flags,
    }


def _add_previous_id(
    identifiers: list[Identifier], msg: Call, identity: IdentityConfig
) -> list[str]:
    """An alias call links ``previousId`` to ``userId``: the previous id becomes an
    identifier of the event, so the pipeline merges whoever holds it into this person.

    It is stored as kind ``anonymous_id``, even when it was once a user id. That is what
    it usually is (analytics.js aliases the browser's anonymousId), and a second ``user_id``
    would break the one-user_id-per-customer merge limit, so the link would be dropped
    instead of made. Equal to the userId: nothing to link. Returns flags.
    """
    if msg.previousId is None or str(msg.previousId) == str(msg.userId):
        return []
    try:
        value = normalise("anonymous_id", msg.previousId, identity)
    except InvalidIdentifier:
        return ["rejected_identifier:previous_id"]
    extra = Identifier(kind="anonymous_id", value=value)
    if extra not in identifiers:
        identifiers.append(extra)
    return []


def build_all(
    items: list[Any], *, call_type: str | None, **arrival: Unpack[Arrival]
) -> tuple[list[Touchpoint], list[Rejection]]:
    """Validate and build each item; one item's failure never affects another. Rejections
    carry the item's index. Items over the per-event size limit are rejected."""
    return _build_each(items, Touchpoint.validate, call_type, arrival)


def build_messages(
    items: list[Any], *, call_type: str | None, **arrival: Unpack[Arrival]
) -> tuple[list[tuple[bytes, bytes]], list[Rejection]]:
    """:func:`build_all`, as the ``(partition key, touchpoint bytes)`` pairs to publish:
    the same verdicts and the same bytes, without building a model per event."""
    return _build_each(items, _message, call_type, arrival)


_Built = TypeVar("_Built")


def _build_each(
    items: list[Any],
    finish: Callable[[dict[str, Any]], _Built],
    call_type: str | None,
    arrival: Arrival,
) -> tuple[list[_Built], list[Rejection]]:
    ids_optional = arrival.get("ids_optional", False)
    # Text, not the id: sources loaded by asyncpg carry its own UUID type, which orjson
    # does not serialise.
    source_id = str(arrival["source"].id)
    built: list[_Built] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items):
        try:
            if (problem := unstorable(item)) is not None:
                raise EventRejected([problem])
            msg = validate_message(item, call_type, ids_optional=ids_optional)
            built.append(finish(build_event(msg, arrival, source_id)))
        except EventRejected as exc:
            rejected.append(rejection(index, item, exc.errors))
        except orjson.JSONEncodeError:  # the batch's context merged in, say
            rejected.append(rejection(index, item, [_TOO_DEEP]))
    return built, rejected


def _message(event: dict[str, Any]) -> tuple[bytes, bytes]:
    key = event_key(event)
    event["identifiers"] = [{"kind": i.kind, "value": i.value} for i in event["identifiers"]]
    return key, wire_bytes(event)


def partition_key(tp: Touchpoint) -> bytes:
    """Events of one browser or person share a partition, so the pipeline sees them in order."""
    first = tp.identifiers[0].value if tp.identifiers else None
    return partition_key_of(tp.anonymous_id, tp.user_id, first, tp.message_id)


def event_key(event: dict[str, Any]) -> bytes:
    """:func:`partition_key` of a :func:`build_event` dict."""
    identifiers: list[Identifier] = event["identifiers"]
    first = identifiers[0].value if identifiers else None
    return partition_key_of(event["anonymous_id"], event["user_id"], first, event["message_id"])


def partition_key_of(
    anonymous_id: str | None, user_id: str | None, first_identifier: str | None, message_id: str
) -> bytes:
    return (anonymous_id or user_id or first_identifier or message_id).encode()


# How JSON writes NUL (U+0000), which Postgres text and jsonb cannot hold: an event with one
# would be refused by the database, after its sender was told it was accepted.
_NUL_ESCAPE = b"\\u0000"
NUL_REFUSED = "a NUL character (\\u0000) cannot be stored"
# The JSON parser accepts deeper nesting than the serialiser writes back.
_TOO_DEEP = FieldError(field=None, message="an event is nested too deeply to store")


def may_hold_nul(data: bytes) -> bool:
    """Whether JSON text may hold a NUL character. False at once for text without a
    backslash, as most is (a one-byte search: 0.6 µs for a 58 KB batch, against 29 µs to
    look for the escape); the escape can also be text after an escaped backslash."""
    return b"\\" in data and _NUL_ESCAPE in data


def unstorable(raw: Any) -> FieldError | None:
    """Why an event (or what every event of a batch gets: its context) cannot be stored,
    whatever its fields say: nested too deeply to write, over the size limit (as compact
    JSON), or a NUL character in any text of it."""
    try:
        data = orjson.dumps(raw)
    except orjson.JSONEncodeError:
        return _TOO_DEEP
    if len(data) > MAX_EVENT_BYTES:
        return FieldError(field=None, message=f"an event is at most {MAX_EVENT_BYTES // 1024} KB")
    if may_hold_nul(data) and (where := nul_at(raw, "")) is not None:
        return FieldError(field=where or None, message=NUL_REFUSED)
    return None


def nul_at(value: Any, path: str) -> str | None:
    """Where a NUL character of ``value`` (JSON values) is, as a dotted path after ``path``;
    None if nowhere. Without recursion: the value may be nested deeper than Python recurses."""
    pending = [(value, path)]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                here = f"{path}.{key}" if path else key
                if "\x00" in key:
                    return here
                pending.append((item, here))
        elif isinstance(value, list):
            pending += ((item, f"{path}.{i}" if path else str(i)) for i, item in enumerate(value))
    return None


def rejection(index: int, raw: Any, errors: list[FieldError]) -> Rejection:
    message_id = raw.get("messageId") if isinstance(raw, dict) else None
    return Rejection(
        index=index,
        messageId=message_id if isinstance(message_id, str) else None,
        errors=errors,
    )
