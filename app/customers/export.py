"""A customer's data, whole, as NDJSON: the data subject access export.

One JSON object a line, each with a ``record`` field saying what it is, in this order:

* ``export``: the customer exported (the survivor), the id asked for, whether it was
  merged, the ids merged into the customer, and when the export was taken;
* ``profile``: the customer's row (traits, counts, stages, journey state);
* ``identity``: each identifier, with the customer it was recorded for;
* ``merge``: each merge that made the customer (survivor, merged, event, identifiers);
* ``stage_transition``: each change of stage, oldest first;
* ``event``: every event, newest first, with all of its fields;
* ``dead_letter``: each message the pipeline could not store that holds one of the
  customer's identifiers (the letters its erasure deletes), key and payload in base64 as
  the bytes came;
* ``end``: how many lines of each record came before it. A stream without it was cut
  short (the answer's status went out with its first line): export again.

Guarantees: one read-only, repeatable-read transaction, so the lines are one consistent
snapshot however long the stream takes, and nothing of another customer. The endpoint
bounds how long that is (``PERCORSO_EXPORT_TIMEOUT_S``): the snapshot holds VACUUM back.
Rows come through server-side cursors a few hundred at a time and go out in chunks of
about 64 KB, so the API's memory does not grow with the customer's events.

Why NDJSON rather than one JSON document: each line stands alone, so a client (``jq``, a
line reader) processes a million events without holding them, and a cut stream shows
itself by the missing ``end`` line rather than as one unparseable document.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from app.customers import repository
from app.customers.schemas import answered_for
from app.errors import NotFound
from app.kit.jsonvalues import uuid_text

MEDIA_TYPE = "application/x-ndjson"
_CHUNK_BYTES = 64 * 1024
_JSON_COLUMNS = frozenset(
    {"traits", "channel_counts", "journey_state", "identifiers", "properties", "context", "flags"}
)


async def stream(pool: asyncpg.Pool[Any], customer_id: uuid.UUID) -> AsyncGenerator[bytes]:
    """The export of ``customer_id`` (a merged id exports its survivor), in chunks of
    whole lines. Raises :class:`NotFound` for an unknown id before it yields anything, so
    the caller can still answer 404; the connection and its transaction are held until the
    stream ends or is closed (a client gone away, or the endpoint's time limit)."""
    async with pool.acquire() as proxy:
        connection: asyncpg.Connection[Any] = proxy  # type: ignore[assignment]
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            survivor = await repository.survivor_id(connection, customer_id)
            family = [] if survivor is None else await repository.family(connection, survivor)
            if survivor is None or not family:
                raise NotFound(f"no customer {customer_id}")
            async for chunk in _chunks(_lines(connection, customer_id, survivor, family)):
                yield chunk


async def _lines(
    connection: asyncpg.Connection[Any],
    requested: uuid.UUID,
    survivor: uuid.UUID,
    family: list[uuid.UUID],
) -> AsyncIterator[bytes]:
    counts: dict[str, int] = {}
    yield _line(
        "export",
        {
            "customer_id": survivor,
            **answered_for(requested, survivor),
            "merged_ids": [c for c in family if c != survivor],
            "exported_at": datetime.now(UTC),
        },
    )
    sources: list[tuple[str, str, Any]] = [
        ("profile", repository.EXPORT_PROFILE, survivor),
        ("identity", repository.EXPORT_IDENTITIES, family),
        ("merge", repository.EXPORT_MERGES, family),
        *(("stage_transition", repository.EXPORT_TRANSITIONS, c) for c in family),
        *(("event", repository.EXPORT_EVENTS, c) for c in family),
    ]
    values: set[str] = set()  # the identities' values, which name its dead letters
    for record, query, arg in sources:
        async for row in repository.rows(connection, query, arg):
            counts[record] = counts.get(record, 0) + 1
            if record == "identity":
                values.add(row["value"])
            yield _line(record, row)
    if values:
        letters = repository.rows(connection, repository.EXPORT_DEAD_LETTERS, sorted(values))
        async for row in letters:
            counts["dead_letter"] = counts.get("dead_letter", 0) + 1
            yield _line("dead_letter", row)
    yield _line("end", {"counts": counts})


def _line(record: str, row: asyncpg.Record | dict[str, Any]) -> bytes:
    fields: dict[str, Any] = {"record": record}
    for key, value in row.items():
        # JSON columns come as the text Postgres wrote: into the line as they are.
        is_json = key in _JSON_COLUMNS and isinstance(value, str)
        fields[key] = orjson.Fragment(value) if is_json else value
    return orjson.dumps(
        fields, default=uuid_text, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE
    )


async def _chunks(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Lines joined into chunks of about ``_CHUNK_BYTES``: one send per chunk, not per line."""
    pending: list[bytes] = []
    size = 0
    async for line in lines:
        pending.append(line)
        size += len(line)
        if size >= _CHUNK_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)
