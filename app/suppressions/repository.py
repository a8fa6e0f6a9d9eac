"""SQL of the suppression list. An identifier is kept as the SHA-256 of ``kind:value``,
computed here alone (:func:`digest_of`): the value never reaches the table. A kind holds
only ``[a-z0-9_]`` (app.identity.identifiers.normalise_kind), so the first ``:`` ends it and
no two identifiers share a digest's input."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from app.kit import bulk


def digest_of(kind: str, value: str) -> str:
    """SQL for the digest of the identifier in the SQL expressions ``kind`` and ``value``
    (constants of the caller's statement, never data)."""
    return f"sha256(convert_to({kind} || ':' || {value}, 'UTF8'))"


_KEYS = bulk.rows_from("$1", "kind text, value text")
# One probe of the primary key per identifier.
_SUPPRESSED_AMONG = f"""
    SELECT k.kind, k.value FROM {_KEYS} AS k
    WHERE EXISTS (SELECT FROM suppressions s WHERE s.digest = {digest_of("k.kind", "k.value")})
"""  # noqa: S608 (constant SQL: the keys are the parameter)
ANY_SUPPRESSION = "EXISTS (SELECT FROM suppressions)"
_ADD = f"""
    INSERT INTO suppressions (digest, kind, reason, token_id, erasure_id)
    SELECT DISTINCT {digest_of("k.kind", "k.value")}, k.kind, $2, $3::uuid, $4::bigint
    FROM {_KEYS} AS k
    ON CONFLICT (digest) DO NOTHING
"""  # noqa: S608 (constant SQL: the keys are the parameter)
_FIND = f"""
    SELECT kind, reason, created_at FROM suppressions WHERE digest = {digest_of("$1", "$2")}
"""  # noqa: S608 (constant SQL: kind and value are the parameters)
_REMOVE = f"""
    DELETE FROM suppressions WHERE digest = {digest_of("$1", "$2")}
    RETURNING kind, reason, created_at
"""  # noqa: S608 (constant SQL: kind and value are the parameters)

Key = tuple[str, str]


async def suppressed_among(conn: asyncpg.Connection[Any], keys: Sequence[Key]) -> set[Key]:
    """Which of the identifiers ``(kind, value)`` are suppressed."""
    if not keys:
        return set()
    return {(r[0], r[1]) for r in await conn.fetch(_SUPPRESSED_AMONG, bulk.rows(keys))}


async def add(
    conn: asyncpg.Connection[Any],
    keys: Sequence[Key],
    *,
    reason: str,
    token_id: uuid.UUID | None = None,
    erasure_id: int | None = None,
) -> int:
    """Suppress the identifiers; how many were not suppressed before (those that were
    keep their first record)."""
    if not keys:
        return 0
    status = await conn.execute(_ADD, bulk.rows(keys), reason, token_id, erasure_id)
    return int(status.rsplit(" ", 1)[-1])


async def find(conn: asyncpg.Connection[Any], kind: str, value: str) -> asyncpg.Record | None:
    """The suppression of ``(kind, value)``: its kind, reason and time; None if none."""
    return await conn.fetchrow(_FIND, kind, value)


async def remove(conn: asyncpg.Connection[Any], kind: str, value: str) -> asyncpg.Record | None:
    """Lift the suppression of ``(kind, value)``; what it was, or None if there was none."""
    return await conn.fetchrow(_REMOVE, kind, value)
