"""The canonical touchpoint: what the API publishes to Kafka and the pipeline consumes.

The wire format is versioned (`schema_version`). A consumer must decode every version it
has ever been published with; fields are only ever added with defaults, never renamed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import orjson
import uuid_utils
from pydantic import BaseModel, ConfigDict, Field
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


class Identifier(BaseModel):
    """One normalised identifier, e.g. ``{"kind": "email", "value": "ada@example.com"}``."""

    model_config = ConfigDict(frozen=True)

    kind: str
    value: str

    # The pipeline keys dicts and sets by identifier on its hot path; pydantic's generic
    # __hash__/__eq__ cost several times these.
    def __hash__(self) -> int:
        return hash((self.kind, self.value))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Identifier):
            return self.kind == other.kind and self.value == other.value
        return NotImplemented


class Touchpoint(BaseModel):
    """A touchpoint as it travels on the `touchpoints` topic."""

    model_config = ConfigDict(extra="ignore")

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
    identifiers: list[Identifier] = Field(default_factory=list)
    traits: dict[str, Any] = Field(default_factory=dict)
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime
    sent_at: datetime | None = None
    received_at: datetime
    # Server-side notes about the event, e.g. "invalid_phone", "timestamp_clamped".
    flags: list[str] = Field(default_factory=list)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Touchpoint:
        return cls.model_validate_json(raw)


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
    ``Touchpoint.model_validate(touchpoint).to_bytes()`` whenever the dict holds only what
    JSON decoding yields plus ``uuid.UUID`` and ``datetime`` values (tests assert it).
    ``OPT_UTC_Z``: pydantic writes a zero UTC offset as ``Z``, orjson as ``+00:00``."""
    return orjson.dumps(touchpoint, option=orjson.OPT_UTC_Z)
