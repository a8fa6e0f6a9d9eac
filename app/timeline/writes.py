"""Timeline writes for the pipeline (asyncpg: one-parameter bulk reads, see app.kit.bulk;
COPY; the batch owns the transaction)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

import asyncpg
import orjson

from app.kit import bulk
from app.suppressions import repository as suppressions
from app.touchpoint import Channel, EventType, Touchpoint

_KEYS = bulk.rows_from("$1", "source_id uuid, message_id text")
_EXISTING = f"""
    SELECT e.source_id, e.message_id, NULL AS kind
    FROM events e JOIN {_KEYS} AS k USING (source_id, message_id)
"""  # noqa: S608 (constant SQL: the keys are the parameter)
# The same, and one row of NULLs if the suppression list is not empty (a probe of its
# primary key: nothing the pipeline's Python pays for while the list is empty) ...
_ANY_SUPPRESSION = f"UNION ALL SELECT NULL, NULL, NULL WHERE {suppressions.ANY_SUPPRESSION}"
_EXISTING_OR_ANY = f"{_EXISTING} {_ANY_SUPPRESSION}"
# ... and which of the identifiers in $2 are suppressed (a probe of it per identifier).
_IDENTIFIERS = bulk.rows_from("$2", "kind text, value text")
_EXISTING_OR_SUPPRESSED = f"""{_EXISTING}
    UNION ALL SELECT NULL, i.value, i.kind FROM {_IDENTIFIERS} AS i
    WHERE EXISTS (
        SELECT FROM suppressions s WHERE s.digest = {suppressions.digest_of("i.kind", "i.value")}
    )
    {_ANY_SUPPRESSION}
"""  # noqa: S608 (constant SQL: keys and identifiers are the parameters)


@dataclass(slots=True)
class Stored:
    """What :func:`stored_or_suppressed` found."""

    # The ``(source_id, message_id)`` pairs already on a timeline.
    keys: set[tuple[uuid.UUID, str]]
    # Whether any identifier at all is suppressed.
    suppressing: bool
    # Of the identifiers asked about, the suppressed ones (None: none was asked about).
    suppressed: set[tuple[str, str]] | None


async def stored_or_suppressed(
    conn: asyncpg.Connection[Any],
    keys: Sequence[tuple[uuid.UUID, str]],
    identifiers: Sequence[tuple[str, str]] | None = None,
) -> Stored:
    """Which ``(source_id, message_id)`` pairs are already on a timeline, whether the
    suppression list holds anything and, when ``identifiers`` (``(kind, value)``) are
    given, which of them it holds: one statement (app.suppressions)."""
    if identifiers is None:
        found = await conn.fetch(_EXISTING_OR_ANY, bulk.rows(keys))
    else:
        found = await conn.fetch(_EXISTING_OR_SUPPRESSED, bulk.rows(keys), bulk.rows(identifiers))
    stored: set[tuple[uuid.UUID, str]] = set()
    suppressed: set[tuple[str, str]] = set()
    suppressing = False
    for source_id, text, kind in found:
        if source_id is not None:
            stored.add((source_id, text))
        elif kind is not None:
            suppressed.add((kind, text))
        else:
            suppressing = True
    return Stored(stored, suppressing, None if identifiers is None else suppressed)


# What a second copy of a stored event violates (its id and its source's message id are
# both unique; the id is checked first).
STORED_KEYS = frozenset({"pk_events", "uq_events_source_id_message_id"})

# The pipeline's COPY, in PostgreSQL's binary format: a touchpoint's own fields first (see
# :func:`own_fields`), then what the pipeline decides: its customer, its stage, and its flags
# (identity resolution may add one).
_OWN = (
    "event_id", "source_id", "message_id", "type", "event", "channel",
    "occurred_at", "sent_at", "received_at", "properties", "traits", "context",
)  # fmt: skip
_DECIDED = ("customer_id", "stage", "flags")
# Stored by the pipeline, in its COPY's order; ``seq`` (the arrival order) comes from its
# sequence.
COLUMNS = _OWN + _DECIDED
_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_TRAILER = b"\xff\xff"
_ROW = len(COLUMNS).to_bytes(2)
_NULL = b"\xff\xff\xff\xff"
_UUID = (16).to_bytes(4)
_TIMESTAMP = (8).to_bytes(4)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's, in microseconds
_JSONB = b"\x01"  # jsonb's binary format: version 1, then the JSON text
_NO_FLAGS = b"\x00\x00\x00\x03\x01[]"
_CHUNK_ROWS = 1_000


def own_fields(tp: Touchpoint) -> bytes:
    """A touchpoint's own columns of its ``events`` row, in the binary COPY format: what the
    COPY of :func:`insert_events` sends for it whichever customer it goes to. Encoding is
    a third of what storing an event costs the consumer in Python, and a decode worker
    (app.pipeline.opener) does it beside the touchpoints it builds.

    Raises ``ValueError`` (``UnicodeEncodeError`` included) or ``TypeError`` for values that
    cannot be encoded (a lone surrogate, say), as the driver would."""
    # Per event, so written for speed: each field's length and bytes go to the join as
    # they are, not concatenated first.
    message_id = tp.message_id.encode()
    properties = orjson.dumps(tp.properties)
    traits = orjson.dumps(tp.traits)
    context = orjson.dumps(tp.context)
    return b"".join(
        (
            _UUID, tp.event_id.bytes,
            _UUID, tp.source_id.bytes,
            len(message_id).to_bytes(4), message_id,
            _TYPES[tp.type],
            _NULL if tp.event is None else _text(tp.event),
            _CHANNELS[tp.channel],
            _timestamp(tp.occurred_at),
            _NULL if tp.sent_at is None else _timestamp(tp.sent_at),
            _received(tp.received_at),
            (len(properties) + 1).to_bytes(4), _JSONB, properties,
            (len(traits) + 1).to_bytes(4), _JSONB, traits,
            (len(context) + 1).to_bytes(4), _JSONB, context,
        )
    )  # fmt: skip


def _text(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(4) + data


def _timestamp(value: datetime) -> bytes:
    if value.tzinfo is None:  # as app.kit.bulk: a naive time is UTC
        value = value.replace(tzinfo=UTC)
    since = value - _EPOCH  # in microseconds, without dividing timedeltas (a third slower)
    micros = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
    return _TIMESTAMP + micros.to_bytes(8, signed=True)


def _jsonb(value: Any) -> bytes:
    data = orjson.dumps(value)
    return (len(data) + 1).to_bytes(4) + _JSONB + data


# The few values of two columns, encoded once.
_TYPES = {t: _text(t) for t in get_args(EventType)}
_CHANNELS = {c: _text(c.value) for c in Channel}
# The receive time encoded last, with its encoding: an envelope's events share theirs.
_last_received: tuple[datetime | None, bytes] = (None, b"")


def _received(value: datetime) -> bytes:
    """:func:`_timestamp` of a receive time, remembered (a whole tuple: threads see one
    value and its encoding, never one with the other's)."""
    global _last_received  # a one-entry cache
    last = _last_received
    if value is not last[0]:
        last = _last_received = (value, _timestamp(value))
    return last[1]


async def insert_events(
    conn: asyncpg.Connection[Any],
    touchpoints: Sequence[Touchpoint],
    customers: Sequence[uuid.UUID],
    stages: Sequence[str | None],
    encoded: Mapping[Any, bytes] | None = None,
    flags: Mapping[int, list[str]] | None = None,
) -> None:
    """Store touchpoints on their customers' timelines, each with the stage it led to, with
    one binary COPY. ``encoded`` has :func:`own_fields` of some touchpoints by event id
    (encoded ahead: in a decode worker, or as a single touchpoint was decoded); the others
    are encoded here. ``flags``: flags
    to store after some touchpoints' own, by index (identity resolution's). The caller has
    dropped the keys already stored (:func:`stored_or_suppressed`); one stored since raises
    ``asyncpg.UniqueViolationError`` on one of :data:`STORED_KEYS`."""
    if touchpoints:
        rows = _copy_data(touchpoints, customers, stages, encoded or {}, flags or {})
        await conn.copy_to_table("events", source=rows, columns=COLUMNS, format="binary")


async def _copy_data(
    touchpoints: Sequence[Touchpoint],
    customers: Sequence[uuid.UUID],
    stages: Sequence[str | None],
    encoded: Mapping[Any, bytes],
    added: Mapping[int, list[str]],
) -> AsyncIterator[bytes]:
    """The COPY's data, `_CHUNK_ROWS` rows at a time (the driver sends each as written, so
    a whole run's rows are never in memory at once). An error encoding a row aborts the
    COPY and is raised as it is."""
    chunk = [_HEADER]
    stage_texts: dict[str | None, bytes] = {}  # a model has a few stages
    rows = zip(touchpoints, customers, stages, strict=True)
    for count, (tp, customer, stage) in enumerate(rows, 1):
        own = encoded.get(tp.event_id) if encoded else None
        text = stage_texts.get(stage)
        if text is None:
            text = stage_texts[stage] = _NULL if stage is None else _text(stage)
        flags = tp.flags
        if added and (more := added.get(count - 1)):
            flags = flags + more
        chunk += (
            _ROW,
            own_fields(tp) if own is None else own,
            _UUID,
            customer.bytes,
            text,
            _jsonb(flags) if flags else _NO_FLAGS,
        )
        if count % _CHUNK_ROWS == 0:
            yield b"".join(chunk)
            chunk = []
    chunk.append(_TRAILER)
    yield b"".join(chunk)
