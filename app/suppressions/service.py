"""The suppression list: identifiers whose events the pipeline drops (not stored, not
dead-lettered) and whose CRM contacts the API refuses.

Guarantees: identifiers are normalised as events' are (app.identity.identifiers), and
stored only as a SHA-256 of kind and value. The list changes only under the writers' lock
held exclusively (app.kit.locks), so each pipeline transaction sees it wholly as it was
before a change or wholly after: an event stored in a transaction that began before a
suppression stays stored (suppressing drops what comes, it deletes nothing: erase for
that), and none is stored that began after it. Suppressing twice, or lifting a suppression
that is not there, changes nothing. Callers own the connection; each change is a
transaction of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from app.customers.schemas import IdentifierIn
from app.errors import InvalidRequest, NotFound
from app.identity.identifiers import IdentityConfig, InvalidIdentifier, normalise, normalise_kind
from app.kit.locks import writers_exclusively
from app.suppressions import repository
from app.suppressions.schemas import SuppressionOut
from app.touchpoint import Touchpoint

Key = repository.Key


def normalised(identifier: IdentifierIn, config: IdentityConfig) -> Key:
    """``(kind, value)`` as the pipeline stores identifiers; a value that could never
    identify anyone (a malformed email, a blocked value like `null`) is a 400."""
    try:
        kind = normalise_kind(identifier.kind)
    except InvalidIdentifier as exc:
        raise InvalidRequest(
            f"not an identifier kind: {exc.reason}",
            errors=[{"field": "kind", "message": exc.reason}],
        ) from None
    try:
        return kind, normalise(kind, identifier.value, config)
    except InvalidIdentifier as exc:
        raise InvalidRequest(
            f"this {kind} never identifies anyone: {exc.reason}",
            errors=[{"field": "value", "message": exc.reason}],
        ) from None


async def suppress(
    conn: asyncpg.Connection[Any],
    identifier: IdentifierIn,
    config: IdentityConfig,
    token_id: uuid.UUID | None = None,
) -> tuple[SuppressionOut, bool]:
    """Suppress an identifier; with whether it was not suppressed before (one that was
    keeps its first record: reason and time)."""
    key = normalised(identifier, config)
    async with writers_exclusively(conn):
        added = await repository.add(conn, [key], reason="request", token_id=token_id)
        row = await repository.find(conn, *key)
    assert row is not None  # added or already there, under the lock
    return _out(row), added == 1


async def unsuppress(
    conn: asyncpg.Connection[Any], identifier: IdentifierIn, config: IdentityConfig
) -> SuppressionOut:
    """Lift a suppression (consent given again): the pipeline stores the identifier's
    events from the next transaction on. 404 when it was not suppressed."""
    key = normalised(identifier, config)
    async with writers_exclusively(conn):
        row = await repository.remove(conn, *key)
    if row is None:
        raise NotFound(f"{key[0]} is not suppressed")
    return _out(row)


async def status(
    conn: asyncpg.Connection[Any], identifier: IdentifierIn, config: IdentityConfig
) -> SuppressionOut:
    """The suppression of an identifier; 404 when it is not suppressed."""
    key = normalised(identifier, config)
    row = await repository.find(conn, *key)
    if row is None:
        raise NotFound(f"{key[0]} is not suppressed")
    return _out(row)


async def suppressed_among(conn: asyncpg.Connection[Any], keys: Sequence[Key]) -> set[Key]:
    """Which of the normalised identifiers are suppressed (one statement)."""
    return await repository.suppressed_among(conn, list(dict.fromkeys(keys)))


async def suppressed_of(
    conn: asyncpg.Connection[Any], touchpoints: Sequence[Touchpoint]
) -> list[list[Key]]:
    """Per touchpoint, its identifiers that are suppressed (:func:`keys_of`): empty for one
    the pipeline would store. One statement for them all."""
    keys = [keys_of(tp) for tp in touchpoints]
    suppressed = await suppressed_among(conn, [key for each in keys for key in each])
    return [[key for key in each if key in suppressed] for each in keys]


def keys_of(tp: Touchpoint) -> list[Key]:
    """The ``(kind, value)`` pairs whose suppression drops ``tp``: its identifiers, and for
    an alias call its previous id as a user id too. The API records ``previousId`` as an
    ``anonymous_id`` (app.ingest.service), but a server's alias from an old user id to a new
    one names the old user id: suppressed (an erased person's), the call is that person's,
    and storing it would record the erased id again, as an anonymous id."""
    keys = [(i.kind, i.value) for i in tp.identifiers]
    if tp.type == "alias":
        keys += [("user_id", value) for kind, value in keys if kind == "anonymous_id"]
    return keys


def _out(row: asyncpg.Record) -> SuppressionOut:
    return SuppressionOut(kind=row["kind"], reason=row["reason"], created_at=row["created_at"])
