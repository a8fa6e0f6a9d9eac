"""Batch envelopes: a ``/v1/batch`` request on the broker as one message, its calls as sent.

Building the canonical touchpoint costs tens of microseconds an event in Python; for a
batch whose every call is plainly valid, the API leaves that to the pipeline and publishes
the calls as they came, with how they arrived (source, receive time, sender, the batch's
``context`` and ``sentAt``). The pipeline builds the touchpoints with the same code the API
runs on any other request (:func:`app.ingest.service.build_all`). This is how Segment's and
RudderStack's gateways stay near the HTTP stack's own speed.

Guarantees:

* :func:`admitted` only admits a batch whose every call the per-event path would
  accept, so the client gets the answer that path would give (all accepted), and the
  pipeline builds every call. What the check skips over unread (a call's ``properties``,
  ``traits`` and ``context``), both paths read alike (:func:`app.ingest.body.loads`).
  Anything else goes the per-event path, whose answer lists each rejection. A call the
  pipeline still cannot build is dead-lettered with the reason, never dropped.
* Every call of an envelope carries its ``messageId``: a redelivered envelope builds the
  same events, and the dedupe key drops them. Only ``event_id`` (server-made) differs.
* No write key travels: a call's own ``writeKey`` (analytics.js puts one in every call it
  batches) is dropped from it first, as the per-event path drops it.
* A call lands in the partition the per-event path would have given it: a request's
  calls go out as one envelope per partition, or several in order where the partition's
  calls exceed :data:`ENVELOPE_BYTES` (:func:`seal`).
* Wire format: a JSON object whose first key is ``envelope`` (:func:`is_envelope`);
  ``version`` says how to read the rest. Canonical touchpoints share the topic.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import orjson

from app.auth.service import SourceInfo
from app.identity.identifiers import IdentityConfig, InvalidIdentifier, normalise
from app.ingest.body import loads
from app.ingest.publisher import partitions_for
from app.ingest.schemas import (
    MAX_EVENT_BYTES,
    MAX_MESSAGE_ID,
    CallType,
    FieldError,
    Id,
    missing_field,
)
from app.ingest.service import CHANNELS, Arrival, build_all, may_hold_nul, partition_key_of
from app.kit.memo import ConfigMemo
from app.touchpoint import Instant, Touchpoint

KIND: Literal["segment-batch"] = "segment-batch"
_PREFIX = b'{"envelope":'
# A call re-serialised (as the size limit measures it) is at most 5 times its bytes as
# sent: only a number can grow, "1e15" (4 bytes, 5 with a separator) to 18. Larger calls
# are measured as the per-event path measures them.
_SURELY_FITS = MAX_EVENT_BYTES // 5
# Bytes of calls an envelope holds at most: a partition's calls beyond that go in further
# envelopes. With the rest of the envelope (the batch's context, at most 32 KB, and the
# sender's) it stays within one of the producer's batches (960 KiB, `app.kit.kafka`), and
# so within a default broker's message.max.bytes (1 MB, of the compressed batch) without
# counting on compression. No less than Segment's 500 KB batch limit: a batch within it
# goes in one envelope per partition, as it always did.
ENVELOPE_BYTES = 512 * 1024
# orjson writes at most 254 levels of nesting; a call with fewer brackets than that in all
# cannot be deeper.
_MAX_BRACKETS = 254
# Every byte but the brackets that open a level ({ and [): what `_brackets` deletes.
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"{[")))
# `_shallow` counts a body's brackets in blocks of at least this many bytes.
_BLOCK = 2048
_NULL = msgspec.Raw(b"null")
# A person's or group's id as the per-event path reads it: orjson reads an integer beyond
# 64 bits as a float, which is no id (msgspec bounds only reach int64: the few integers
# between go the per-event path, which decides).
_Id = str | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Batch(msgspec.Struct):
    """A ``/v1/batch`` body, its calls left as sent. Decoding fails for anything that is
    not plainly this shape; the per-event path then decides, and words the error."""

    batch: list[msgspec.Raw]
    # As sent: msgspec reads an integer beyond 64 bits as one, orjson as a float.
    context: msgspec.Raw = _NULL
    sentAt: msgspec.Raw = _NULL
    writeKey: msgspec.Raw = _NULL

    def head(self) -> dict[str, Any]:
        """The body's fields as the per-event path's decoding (:func:`loads`) gives them
        (calls still as sent)."""
        return {
            "batch": self.batch,
            "context": loads(memoryview(self.context)),  # orjson reads no Raw
            "sentAt": loads(memoryview(self.sentAt)),
            "writeKey": loads(memoryview(self.writeKey)),
        }


class _Object(msgspec.Struct):
    """Any JSON object, its contents skipped unread (the pipeline reads them)."""


class _Call(msgspec.Struct):
    """A call the per-event path accepts, as far as types and limits go: stricter than
    :class:`app.ingest.schemas.SegmentCall` (a ``type``, a ``messageId``, RFC 3339 times)."""

    type: CallType
    messageId: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MESSAGE_ID)]
    userId: _Id | None = None
    anonymousId: _Id | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    groupId: _Id | None = None
    previousId: _Id | None = None
    properties: _Object | None = None
    traits: _Object | None = None
    context: _Object | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    receivedAt: datetime | None = None
    writeKey: str | None = None


class _Calls(msgspec.Struct):
    """A ``/v1/batch`` body's calls, typed (its other fields are :class:`Batch`'s)."""

    batch: list[_Call]


class Envelope(msgspec.Struct, kw_only=True):
    """A batch envelope on the wire: the calls as sent, and everything of their arrival
    that building them needs (see :data:`app.ingest.service.Arrival`)."""

    envelope: Literal["segment-batch"] = KIND
    version: int = 1
    source_id: uuid.UUID
    channel: str
    received_at: Instant
    request_context: dict[str, Any]
    context: dict[str, Any] | None = None
    sent_at: datetime | None = None  # the batch's sentAt, as sent (without an offset: UTC)
    items: list[msgspec.Raw]


# A call of an envelope that could not be built: its position among the envelope's items,
# the call as sent, and why.
Failed = tuple[int, bytes, str]


class InvalidEnvelope(ValueError):
    """Bytes that start like an envelope but are not one."""


_BATCH = msgspec.json.Decoder(Batch)
_CALLS = msgspec.json.Decoder(_Calls)
_ENVELOPE = msgspec.json.Decoder(Envelope)
_ENCODER = msgspec.json.Encoder()


def decode_batch(body: bytes) -> Batch | None:
    """The body as a :class:`Batch`, or None when it is not plainly one."""
    try:
        return _BATCH.decode(body)
    except (msgspec.DecodeError, RecursionError):  # ValidationError included
        return None


class Admitted(NamedTuple):
    """A batch's calls as they go out (:func:`seal`), and each one's partition key."""

    calls: list[msgspec.Raw]
    keys: list[bytes]


def admitted(body: bytes, calls: list[msgspec.Raw], arrival: Arrival) -> Admitted | None:
    """The calls as they travel (as sent; compact and less their ``writeKey`` where they
    carry one, or are longer than an event may be), each keyed as the per-event path would
    key it; or None unless that path would accept every call, and there is one. ``calls``
    are :func:`decode_batch` of ``body``.

    Accepted here: typed as :class:`_Call`, no required field missing, a usable ``userId``
    or ``anonymousId``, within the size and nesting limits, no NUL character, from a source
    of a known channel. Conservative: None sends the batch the per-event path, which gives the
    verdict."""
    identity = arrival["identity"]
    if not calls or arrival["source"].channel not in CHANNELS or may_hold_nul(body):
        return None
    # The calls typed in one decode of the body: a decoder call per call costs a third more.
    try:
        typed = _CALLS.decode(body).batch
    except msgspec.DecodeError:
        return None
    # Calls longer than this are measured against the size and nesting limits one by one.
    # A depth of 254 takes 508 bytes of brackets; when the body has too few brackets for any
    # of its calls to be that deep, only calls that might be too large are measured.
    longest = max(map(len, calls))
    measured = 2 * _MAX_BRACKETS - 1
    if _shallow(body, min(longest, _SURELY_FITS)):
        measured = _SURELY_FITS
    if longest > measured and not all(
        _within_limits(bytes(raw)) for raw in calls if len(raw) > measured
    ):
        return None
    anonymous_ids = _ANONYMOUS_IDS.answers(identity)
    user_ids = _USER_IDS.answers(identity)
    keys: list[bytes] = []
    rewrite: list[int] = []  # the calls that travel compact: those with a write key of their own
    # Per call, so written for speed: the verdict caches read here, helpers only on a miss.
    for call in typed:
        if call.writeKey is not None:
            rewrite.append(len(keys))
        anonymous_id, user_id = call.anonymousId, call.userId
        # A usable anonymousId or userId first: missing_field need not look for one.
        usable: bool | None = False
        if anonymous_id is not None:
            usable = anonymous_ids.get(anonymous_id)
            if usable is None:
                usable = _judge(_ANONYMOUS_IDS, "anonymous_id", anonymous_id, identity)
        if not usable and user_id is not None:
            usable = user_ids.get(user_id)
            if usable is None:
                usable = _judge(_USER_IDS, "user_id", user_id, identity)
        if not usable or missing_field(call, ids_optional=True):
            return None
        keys.append(
            # Most calls carry an anonymousId as text: partition_key_of's answer, inline.
            anonymous_id.encode()
            if type(anonymous_id) is str and anonymous_id
            else partition_key_of(
                None if anonymous_id is None else str(anonymous_id),
                None if user_id is None else str(user_id),
                None,
                call.messageId,
            )
        )
    if longest > MAX_EVENT_BYTES:
        # Calls longer as sent than an event may be (blank space, escapes: they passed the
        # limit as measured) travel compact too, so that none makes an envelope exceed its
        # bound (`seal`).
        long = (i for i, raw in enumerate(calls) if len(raw) > MAX_EVENT_BYTES)
        rewrite = sorted({*rewrite, *long})
    if rewrite:
        calls = calls.copy()  # the caller's list stays as decoded
        for index in rewrite:
            compact = _compact(calls[index])
            if compact is None:
                return None
            calls[index] = compact
    return Admitted(calls, keys)


def _compact(call: msgspec.Raw) -> msgspec.Raw | None:
    """``call`` (a JSON object) as compact JSON, less its ``writeKey``, as the per-event path
    reads it (both parse with :func:`loads`), or None if orjson cannot read or write it."""
    try:
        fields = loads(memoryview(call))
        fields.pop("writeKey", None)
        return msgspec.Raw(orjson.dumps(fields))
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None


def _judge(verdicts: ConfigMemo[Id, bool], kind: str, value: Id, identity: IdentityConfig) -> bool:
    """Whether ``value`` is a usable identifier of ``kind``, remembered in ``verdicts`` (that
    kind's): a browser's batch names one anonymousId in every call; a server's, a few
    people."""
    try:
        normalise(kind, value, identity)
        verdict = True
    except InvalidIdentifier:
        verdict = False
    verdicts.remember(value, verdict)
    return verdict


# Verdicts of _judge for the process's identity config, a memo per kind: keyed by the value
# alone, a lookup builds and hashes no tuple (the check on bench bodies of new people: 135-137
# against 147-155 µs a request). A value is text or an integer, which never collide.
_ANONYMOUS_IDS: ConfigMemo[Id, bool] = ConfigMemo(limit=65_536)
_USER_IDS: ConfigMemo[Id, bool] = ConfigMemo(limit=65_536)


def _shallow(body: bytes, longest: int) -> bool:
    """Whether no call of ``body`` up to ``longest`` bytes long can hold `_MAX_BRACKETS`
    opening brackets. Such a call lies within two adjacent blocks of at least ``longest``
    bytes, so it is enough that every two adjacent blocks hold fewer: one pass over the
    body, against a copy and two passes per call. False for a body dense with brackets
    (its calls are then counted one by one)."""
    block = max(longest, _BLOCK)
    previous = 0
    for start in range(0, len(body), block):
        brackets = _brackets(body[start : start + block])
        if previous + brackets >= _MAX_BRACKETS:
            return False
        previous = brackets
    return True


def _within_limits(data: bytes) -> bool:
    """Whether a call passes the per-event path's size and nesting limits: at once when it
    is small and has few brackets, otherwise measured as that path measures it."""
    small = len(data) <= _SURELY_FITS
    return (small and _brackets(data) < _MAX_BRACKETS) or _fits(data)


def _brackets(data: bytes) -> int:
    """How many brackets open a level of nesting in ``data`` (an upper bound on its depth)."""
    return len(data.translate(None, _NOT_BRACKETS))


def _fits(data: bytes) -> bool:
    """The size limit as the per-event path measures it (compact JSON, as orjson writes it);
    a call nested too deeply for orjson to write fails it too."""
    try:
        return len(orjson.dumps(loads(data))) <= MAX_EVENT_BYTES
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return False


def seal(
    calls: list[msgspec.Raw], keys: list[bytes], partitions: int, arrival: Arrival
) -> list[tuple[int, bytes, bytes]]:
    """The ``(partition, key, envelope)`` messages of ``calls`` that have
    :func:`admitted`: per partition, the calls the per-event path would have put there, in
    order, keyed by the first of them; in one envelope, or where they exceed
    :data:`ENVELOPE_BYTES` in several, one after the other under that key. So a person's
    events share a partition, in the order sent, whatever path they took, and the
    pipeline's batches keep each person's events together."""
    groups: dict[int, tuple[bytes, list[msgspec.Raw]]] = {}
    for raw, key, partition in zip(calls, keys, partitions_for(keys, partitions), strict=True):
        group = groups.get(partition)
        if group is None:
            groups[partition] = (key, [raw])
        else:
            group[1].append(raw)
    return [
        (
            partition,
            key,
            _ENCODER.encode(
                Envelope(
                    source_id=arrival["source"].id,
                    channel=arrival["source"].channel,
                    received_at=arrival["received_at"],
                    request_context=arrival["request_context"],
                    context=arrival.get("batch_context"),
                    sent_at=arrival.get("sent_at"),
                    items=items,
                )
            ),
        )
        for partition, (key, group) in groups.items()
        for items in _pieces(group)
    ]


def _pieces(calls: list[msgspec.Raw]) -> list[list[msgspec.Raw]]:
    """``calls`` in order, in lists of at most :data:`ENVELOPE_BYTES` (a call is at most
    ``MAX_EVENT_BYTES`` long once :func:`admitted`)."""
    if sum(map(len, calls)) <= ENVELOPE_BYTES:
        return [calls]
    pieces: list[list[msgspec.Raw]] = [[]]
    size = 0
    for raw in calls:
        if size and size + len(raw) > ENVELOPE_BYTES:
            pieces.append([])
            size = 0
        pieces[-1].append(raw)
        size += len(raw)
    return pieces


def is_envelope(value: bytes) -> bool:
    return value.startswith(_PREFIX)


def open_envelope(value: bytes, identity: IdentityConfig) -> tuple[list[Touchpoint], list[Failed]]:
    """The touchpoints of an envelope, built as the API builds a request's, and each call
    that could not be built (:data:`Failed`, in the order of the items). Raises
    :class:`InvalidEnvelope`."""
    try:
        envelope = _ENVELOPE.decode(value)
    except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError included
        raise InvalidEnvelope(str(exc)) from None
    if envelope.version != 1:
        raise InvalidEnvelope(f"envelope version {envelope.version} is newer than this consumer")
    if envelope.channel not in CHANNELS:
        raise InvalidEnvelope(f"unknown channel {envelope.channel[:50]!r}")
    items = envelope.items
    sent: list[int] = []  # the item of each call read
    calls: list[Any] = []
    failed: list[Failed] = []
    for index, raw in enumerate(items):
        try:
            calls.append(loads(bytes(raw)))
            sent.append(index)
        except orjson.JSONDecodeError as exc:
            failed.append((index, bytes(raw), f"not JSON: {exc}"))
    # Building reads a source's id and channel only.
    source = SourceInfo(id=envelope.source_id, name="", channel=envelope.channel, settings={})
    touchpoints, rejected = build_all(
        calls,
        call_type=None,
        source=source,
        received_at=envelope.received_at,
        identity=identity,
        request_context=envelope.request_context,
        batch_context=envelope.context,
        sent_at=envelope.sent_at,
    )
    if rejected:
        for r in rejected:
            index = sent[r.index]
            failed.append((index, bytes(items[index]), _reason(r.errors)))
        failed.sort()
    return touchpoints, failed


def _reason(errors: list[FieldError]) -> str:
    return "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
