"""The canonical touchpoint: what the API publishes to Kafka and the pipeline consumes.

The wire format is versioned (`schema_version`). A consumer must decode every version it
has ever been published with; fields are only ever added with defaults, never renamed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec
import orjson
import uuid_utils
from uuid_utils.compat import uuid7

SCHEMA_VERSION = 1


class Channel(StrEnum):
    web = "web"
    email = "email"
    social = "social"
    in_store = "in_store"
    mobile = "mobile"
    crm = "crm"
    call_center = "call_center"
    ads = "ads"
    other = "other"


EventType = Literal["track", "page", "screen", "identify", "alias", "group"]
# A time with its UTC offset, as the API writes every time it builds. The pipeline orders
# and compares an event's times with others, which a time without an offset cannot be:
# such a message is undecodable.
Instant = Annotated[datetime, msgspec.Meta(tz=True)]
# The flag of an event that is not the person's doing (an email open by a privacy proxy, a
# click by a link scanner: `app.email.machine`); journeys leave such events out.
MACHINE_FLAG = "machine_activity"


class Identifier(msgspec.Struct, frozen=True, gc=False):
    """One normalised identifier, e.g. ``{"kind": "email", "value": "ada@example.com"}``.
    Hashable: the pipeline keys dicts and sets by identifier. Text only, so never part of a
    reference cycle: not a type the garbage collector knows (``gc=False``), and a tuple of
    identifiers is one it stops tracking (app.identity.identifiers remembers such tuples)."""

    kind: str
    value: str


class Touchpoint(msgspec.Struct, kw_only=True):
    """A touchpoint as it travels on the `touchpoints` topic.

    A msgspec struct, not a pydantic model: the pipeline decodes every event it stores,
    and msgspec decodes and type-checks one in well under half pydantic's time. Fields it
    does not know (from a newer producer) are ignored. Construct from untrusted data with
    :meth:`validate` or :meth:`from_bytes`, which check every type; the constructor
    trusts its arguments."""

    schema_version: int = SCHEMA_VERSION
    event_id: uuid.UUID
    message_id: str
    source_id: uuid.UUID
    channel: Channel
    type: EventType
    # Track: the event name. Page/screen: the page or screen name (may be absent).
    event: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    # Normalised identifiers (blocked and malformed values already removed), in the
    # order they were found. The pipeline resolves the customer from these.
    identifiers: list[Identifier] = msgspec.field(default_factory=list)
    traits: dict[str, Any] = msgspec.field(default_factory=dict)
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    occurred_at: Instant
    sent_at: Instant | None = None
    received_at: Instant
    # Server-side notes about the event, e.g. "invalid_phone", "timestamp_clamped".
    flags: list[str] = msgspec.field(default_factory=list)

    def to_bytes(self) -> bytes:
        """The wire bytes, written by orjson as the ingest hot path writes them
        (:func:`wire_bytes`), so every producer publishes one format."""
        return orjson.dumps(self, default=msgspec.structs.asdict, option=orjson.OPT_UTC_Z)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Touchpoint:
        """Raises :class:`InvalidTouchpoint` for bytes that are not a touchpoint."""
        try:
            return _DECODER.decode(raw)
        except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError included
            raise InvalidTouchpoint(str(exc)) from None

    @classmethod
    def validate(cls, fields: dict[str, Any]) -> Touchpoint:
        """The touchpoint of plain values (text or ``uuid.UUID`` ids, ``datetime`` or ISO
        text times), type-checked. Raises :class:`InvalidTouchpoint`."""
        try:
            return msgspec.convert(fields, cls)
        except msgspec.ValidationError as exc:
            raise InvalidTouchpoint(str(exc)) from None


class InvalidTouchpoint(ValueError):
    """Bytes or values that do not make a touchpoint; the message names the field."""


_DECODER = msgspec.json.Decoder(Touchpoint)


# An event's place on its customer's timeline: events are applied in this order.
EventKey = tuple[datetime, uuid.UUID]  # (occurred_at, event_id)


def new_event_id() -> uuid.UUID:
    """A time-ordered (v7) id: consecutive inserts land on the same index pages."""
    return uuid7()


def new_event_id_str() -> str:
    """:func:`new_event_id` as its canonical text, without building a ``uuid.UUID`` (a
    quarter of the cost, on a path that runs once or twice per ingested event)."""
    return str(uuid_utils.uuid7())


def wire_bytes(touchpoint: dict[str, Any]) -> bytes:
    """The bytes of a touchpoint given as a plain dict in field order, as the ingest hot
    path builds it (``app.ingest.service.build_event``): equal to
    ``Touchpoint.validate(touchpoint).to_bytes()`` whenever the dict holds only what
    JSON decoding yields plus ``uuid.UUID`` and ``datetime`` values (tests assert it).
    ``OPT_UTC_Z``: a zero UTC offset is written ``Z`` (orjson would write ``+00:00``)."""
    return orjson.dumps(touchpoint, option=orjson.OPT_UTC_Z)
