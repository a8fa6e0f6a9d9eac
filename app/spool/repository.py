"""SQL of the spool (migration 0013): one statement per request in, oldest rows out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

# One statement: a request's messages are committed all together or not at all, in their
# order (ids follow the ordinality).
_INSERT = """
INSERT INTO spool (partition, key, value)
SELECT m.partition, m.key, m.value
FROM unnest($1::int[], $2::bytea[], $3::bytea[]) WITH ORDINALITY AS m (partition, key, value, n)
ORDER BY m.n
"""
# Relays (every API process has one) take turns, a chunk each: a relay publishing newer
# rows while another still holds older ones would put a person's events out of order on
# their partition (and the older ones may yet roll back). Held until the chunk's
# transaction ends; a relay waits for it at most one chunk's publish.
SPOOL_LOCK = 0x70632D73706F6F6C  # "pc-spool"
_TURN = "SELECT pg_advisory_xact_lock($1)"
_TAKE = "SELECT id, partition, key, value FROM spool ORDER BY id LIMIT $1 FOR UPDATE"
# The oldest rows up to an id (those there were when the relay asked for `_LAST`).
_TAKE_UPTO = """
SELECT id, partition, key, value FROM spool WHERE id <= $2 ORDER BY id LIMIT $1 FOR UPDATE
"""
_LAST = "SELECT max(id) FROM spool"
_DELETE = "DELETE FROM spool WHERE id = ANY($1::bigint[])"
# octet_length reads a TOASTed value's size from its pointer: no value is read.
_MEASURE = "SELECT count(*), coalesce(sum(octet_length(key) + octet_length(value)), 0) FROM spool"


async def insert(
    conn: asyncpg.Connection[Any], messages: Sequence[tuple[int, bytes, bytes]]
) -> None:
    await conn.execute(
        _INSERT, [m[0] for m in messages], [m[1] for m in messages], [m[2] for m in messages]
    )


async def take(
    conn: asyncpg.Connection[Any], limit: int, upto: int | None = None
) -> list[asyncpg.Record]:
    """The oldest ``limit`` rows (of ids up to ``upto``, when given), locked until this
    transaction ends, after waiting for any other relay's chunk to end (:data:`SPOOL_LOCK`):
    whichever relay takes a chunk, the rows before it are published and gone."""
    await conn.execute(_TURN, SPOOL_LOCK)
    if upto is None:
        return await conn.fetch(_TAKE, limit)
    return await conn.fetch(_TAKE_UPTO, limit, upto)


async def last(conn: asyncpg.Connection[Any]) -> int | None:
    """The id of the newest row, None when the spool is empty."""
    value: int | None = await conn.fetchval(_LAST)
    return value


async def delete(conn: asyncpg.Connection[Any], ids: Sequence[int]) -> None:
    await conn.execute(_DELETE, ids)


async def measure(conn: asyncpg.Connection[Any]) -> tuple[int, int]:
    """Messages in the spool and their bytes (keys and values)."""
    row = await conn.fetchrow(_MEASURE)
    assert row is not None
    return row[0], row[1]
