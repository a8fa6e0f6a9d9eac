"""Request and response shapes of the tracking API (Segment's HTTP Tracking API)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

import msgspec
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from app.identity.identifiers import InvalidIdentifier, whole_number

MAX_EVENT_BYTES = 32 * 1024
# RudderStack's Python SDK sends a batch once its events reach 4 MiB (its BATCH_SIZE_LIMIT),
# counted as it writes them (json.dumps: spaced, non-ASCII escaped, up to 3 times the compact
# bytes the event limit measures), the event that got there included. Room for that event
# and the batch's own bytes (a separator per event, sentAt): 4 MiB and 128 KiB, unzipped.
# (Segment's libraries send at most 500 KB, Segment's limit.)
MAX_BATCH_BYTES = 4 * 1024 * 1024 + 4 * MAX_EVENT_BYTES
# Segment's (rudder-sdk-python sends 100 at its defaults). Kept: a batch is checked in one
# go on the event loop, and 2,500 calls the per-event path builds hold it 30-50 ms already.
MAX_BATCH_EVENTS = 2_500
MAX_MESSAGE_ID = 100
MAX_NAME = 200
IDS_OPTIONAL = "ids_optional"

CallType = Literal["track", "page", "screen", "identify", "group", "alias"]


def _id(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("an id is a string or a number, not true or false")
    if isinstance(value, float):
        try:
            return whole_number(value)
        except InvalidIdentifier as exc:
            raise ValueError(f"an id sent as a number: {exc}") from None
    return value


# A person's or group's id: a string, or a whole number (kept as its digits). Not JSON's
# true or false, which pydantic would take for 1 and 0: every call sending `"userId": false`
# would be one person, "0". Nor a float pydantic would round to an int: 9007199254740993.0
# is read as another person's 9007199254740992. (msgspec, strict, refuses both as it is.)
Id = Annotated[str | int, BeforeValidator(_id)]
# A time as Segment's libraries send it (RFC 3339 text), or as pydantic's parser also takes
# it (other ISO 8601 forms, and Unix times: `app.ingest.service._time`), as documented.
Timestamp = Annotated[
    datetime,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number", "description": "Unix time, in seconds or milliseconds"},
            ]
        }
    ),
]

# An event, page or screen name longer than MAX_NAME is cut to it and the event flagged
# (app.ingest.service.build_event), not refused: Segment and RudderStack keep the event. A
# name is a label, which journey rules match and the journey model remembers (a memo of
# the last few thousand names), and which the timeline, transitions and analytics show.
NAME_DESCRIPTION = (
    f"Longer than {MAX_NAME} characters, the name is cut to {MAX_NAME} and the event flagged "
    "`name_truncated`."
)


class SegmentMessage(BaseModel):
    """One call as Segment's libraries send it. Unknown fields (``integrations``,
    ``_metadata``, ``channel``, …) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    type: CallType | None = None
    messageId: str | None = Field(default=None, max_length=MAX_MESSAGE_ID)
    userId: Id | None = None
    anonymousId: Id | None = None
    event: str | None = Field(default=None, description=NAME_DESCRIPTION)
    name: str | None = Field(default=None, description=NAME_DESCRIPTION)
    category: str | None = None
    groupId: Id | None = None
    previousId: Id | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    timestamp: Timestamp | None = None
    originalTimestamp: Timestamp | None = None
    sentAt: Timestamp | None = None
    receivedAt: Timestamp | None = None
    writeKey: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _required_fields(self, info: ValidationInfo) -> SegmentMessage:
        # Server-built messages (email tokens, imports) may identify a person by email or
        # phone alone; they validate with context {"ids_optional": True}.
        ids_optional = bool(info.context and info.context.get(IDS_OPTIONAL))
        problem = missing_field(self, ids_optional=ids_optional)
        if problem is not None:
            raise ValueError(problem)
        return self


class SegmentCall(msgspec.Struct):
    """:class:`SegmentMessage` for msgspec, which validates a call in about half
    pydantic's time (3.7 against 6.9 µs here): the ingest hot path tries it first
    (``app.ingest.service``).

    Same fields, types and limits; it may refuse more than :class:`SegmentMessage` (an
    ``int`` where pydantic would coerce a float, say), never less. A refused call goes
    on to pydantic, whose verdict and error messages stand. Timestamps pass msgspec
    unchecked and are then parsed as pydantic parses them (``app.ingest.service._time``:
    msgspec rounds fractions of a microsecond that pydantic truncates, and refuses Unix
    times). ``tests/ingest/test_fast_validation.py`` holds the two models to each other."""

    type: CallType | None = None
    messageId: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_ID)] | None = None
    userId: Id | None = None
    anonymousId: Id | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    groupId: Id | None = None
    previousId: Id | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    # Anything in, datetime out (see above).
    timestamp: Any = None
    originalTimestamp: Any = None
    sentAt: Any = None
    receivedAt: Any = None
    writeKey: str | None = None


TIMESTAMP_FIELDS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")


class CallFields(Protocol):
    """What :func:`missing_field` reads of a call (any of the call models)."""

    @property
    def type(self) -> str | None: ...
    @property
    def userId(self) -> Id | None: ...
    @property
    def anonymousId(self) -> Id | None: ...
    @property
    def event(self) -> str | None: ...
    @property
    def groupId(self) -> Id | None: ...
    @property
    def previousId(self) -> Id | None: ...


# The fields a call of each type needs, beside a userId or anonymousId, as missing_field
# checks them (for the OpenAPI document; tests hold the two together).
NEEDS: dict[str, tuple[str, ...]] = {
    "track": ("event",),
    "group": ("groupId",),
    "alias": ("previousId", "userId"),
}


def missing_field(call: CallFields, *, ids_optional: bool) -> str | None:
    """What a call lacks for its type (Segment's rules), or None."""
    if not ids_optional and _blank(call.userId) and _blank(call.anonymousId):
        return "userId or anonymousId is required"
    if call.type == "track" and (call.event is None or not call.event.strip()):
        return "a track call needs an event name"
    if call.type == "group" and _blank(call.groupId):
        return "a group call needs a groupId"
    if call.type == "alias" and (_blank(call.previousId) or _blank(call.userId)):
        return "an alias call needs a previousId and a userId"
    return None


def _blank(value: Id | None) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class BatchRequest(BaseModel):
    """``POST /v1/batch``: several calls, each with its own ``type``."""

    batch: list[dict[str, Any]] = Field(max_length=MAX_BATCH_EVENTS)
    context: dict[str, Any] | None = None
    sentAt: Timestamp | None = None
    writeKey: str | None = None


class FieldError(BaseModel):
    field: str | None
    message: str


class Rejection(BaseModel):
    index: int = Field(description="Position of the event in the request (0 for single calls).")
    messageId: str | None = None
    errors: list[FieldError]


class IngestResponse(BaseModel):
    """Segment's ``{"success": true}``, plus what Percorso did with each event."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"success": True, "accepted": 1, "rejected": []},
                {
                    "success": True,
                    "accepted": 2,
                    "rejected": [
                        {
                            "index": 1,
                            "messageId": "m-2",
                            "errors": [
                                {"field": None, "message": "userId or anonymousId is required"}
                            ],
                        }
                    ],
                },
            ]
        }
    )

    success: bool = True
    accepted: int = Field(description="Events acknowledged by the broker.")
    rejected: list[Rejection] = Field(
        default_factory=list,
        description="Events refused, with the reasons; nothing of them is stored.",
    )
