"""Reading profiles (a merged customer's id answers with the survivor), and erasing
customers."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers import erasure, repository
from app.customers.schemas import answered_for
from app.errors import NotFound
from app.identity.identifiers import IdentityConfig, InvalidIdentifier, normalise, normalise_kind
from app.kit.cursor import Paged, decode_cursor, encode_cursor
from app.kit.locks import writers_exclusively
from app.models import Customer
from app.suppressions import repository as suppressions

if TYPE_CHECKING:
    import asyncpg

Row = TypeVar("Row")


async def resolve_customer(session: AsyncSession, customer_id: uuid.UUID) -> Customer:
    customer = await repository.survivor(session, customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id}")
    return customer


async def survivor_id(connection: asyncpg.Connection[Any], customer_id: uuid.UUID) -> uuid.UUID:
    survivor = await repository.survivor_id(connection, customer_id)
    if survivor is None:
        raise NotFound(f"no customer {customer_id}")
    return survivor


async def profile(connection: asyncpg.Connection[Any], customer_id: uuid.UUID) -> dict[str, Any]:
    """The JSON-ready dict of a ``Profile`` (``app.customers.schemas``), which the endpoint
    writes with orjson."""
    row = await repository.profile(connection, customer_id)
    if row is None:
        raise NotFound(f"no customer {customer_id}")
    return _profile(row, requested=customer_id)


async def lookup(
    connection: asyncpg.Connection[Any], kind: str, value: str, config: IdentityConfig
) -> dict[str, Any]:
    """The profile owning identifier ``(kind, value)``; both are normalised first, as the
    pipeline stores them, so ``Ada@Example.com`` finds ``ada@example.com`` and
    ``Loyalty Card`` finds ``loyalty_card``."""
    try:
        kind = normalise_kind(kind)
        normalised = normalise(kind, value, config)
    except InvalidIdentifier as exc:
        raise NotFound(f"no customer with {kind} {value!r}: {exc}") from None
    owner = await repository.owner_of(connection, kind, normalised)
    row = None if owner is None else await repository.profile(connection, owner)
    if row is None:
        raise NotFound(f"no customer with {kind} {normalised!r}")
    return _profile(row, requested=None)


def _profile(row: asyncpg.Record, requested: uuid.UUID | None) -> dict[str, Any]:
    return {
        "id": row["id"],
        **answered_for(requested, row["id"]),
        "identities": orjson.Fragment(row["identities"]),
        "identity_counts": orjson.Fragment(row["identity_counts"]),
        "identity_count": row["identity_count"],
        "identities_truncated": row["identities_truncated"],
        "traits": orjson.Fragment(row["traits"]),
        "stage": row["current_stage"],
        "furthest_stage": row["furthest_stage"],
        "first_seen_at": row["first_seen_at"],
        "last_seen_at": row["last_seen_at"],
        "event_count": row["event_count"],
        "channel_counts": orjson.Fragment(row["channel_counts"]),
    }


def _kind_and_value(kind: str, value: str) -> tuple[str, str]:
    if "\x00" in kind or "\x00" in value:  # Postgres text cannot hold it (a failed query)
        raise ValueError("no identity holds a NUL character")
    return kind, value


async def identities(
    connection: asyncpg.Connection[Any],
    customer_id: uuid.UUID,
    *,
    kind: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of the customer's identities (of ``kind`` only, if given), by kind then value,
    after ``cursor``: the JSON-ready dict of an ``IdentitiesPage``. A merged id answers with
    the survivor; NotFound if unknown; InvalidRequest for a cursor this API did not issue."""
    after = decode_cursor(cursor, Paged.IDENTITIES, _kind_and_value) if cursor else None

    def fetch(customer: uuid.UUID) -> Awaitable[list[dict[str, str]]]:
        return repository.identities(connection, customer, kind=kind, after=after, limit=limit + 1)

    return await page_of(
        connection,
        customer_id,
        limit,
        fetch,
        lambda last: encode_cursor(Paged.IDENTITIES, last["kind"], last["value"]),
    )


async def page_of(
    connection: asyncpg.Connection[Any],
    customer_id: uuid.UUID,
    limit: int,
    fetch: Callable[[uuid.UUID], Awaitable[list[Row]]],
    position: Callable[[Row], str],
) -> dict[str, Any]:
    """A keyset page of one customer's rows (the timeline's, the identity list's): the
    JSON-ready dict of its page, ``next_cursor`` from ``position`` of the last row when
    there are more. ``fetch(id)`` reads up to ``limit + 1`` rows of a customer from the
    cursor on. The page is read first: an id that holds rows is a live customer (a merge
    moves the merged customer's events and identities in the transaction that marks it
    merged), so the usual request needs no lookup. An empty page may be a merged id
    (answered with its survivor's rows) or an unknown one (NotFound)."""
    rows = await fetch(customer_id)
    survivor = customer_id
    if not rows:
        survivor = await survivor_id(connection, customer_id)
        if survivor != customer_id:
            rows = await fetch(survivor)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "customer_id": survivor,
        **answered_for(customer_id, survivor),
        "items": rows,
        "next_cursor": position(rows[-1]) if more else None,
    }


async def erase(
    connection: asyncpg.Connection[Any],
    customer_id: uuid.UUID,
    *,
    suppress: bool,
    token_id: uuid.UUID | None,
) -> dict[str, Any]:
    """Erase a customer and every customer merged into it: events, stage transitions,
    identities, merges, profiles (with their journey state), and the dead letters that
    hold one of their identifiers; their identifiers are taken off other customers' merges
    that name them (a shared device's); with ``suppress``, each identifier goes on the
    suppression list (app.suppressions). Records the audit row and reports each erased id
    on the changes feed. Returns the audit record (an ``Erasure``, JSON-ready).

    One transaction, under the writers' lock held exclusively, then the customers' row
    locks in ascending id order: the pipeline's global lock order, so no deadlock, and no
    pipeline transaction runs meanwhile. One that stored this person's events before
    commits first and its events are erased; one after sees the customer gone and, with
    ``suppress``, drops each event carrying an erased identifier (without, such an event
    starts a new customer). Idempotent: an id erased before answers its erasure's record
    again; an id never known is a 404."""
    async with writers_exclusively(connection):
        survivor = await repository.survivor_id(connection, customer_id)
        if survivor is None:
            done = await erasure.previous(connection, customer_id)
            if done is None:
                raise NotFound(f"no customer {customer_id}")
            return _erasure(done)
        # No pipeline transaction runs, so nothing merges meanwhile: these are all of them.
        family = await erasure.lock(connection, await repository.family(connection, survivor))
        keys = await erasure.identities(connection, family)
        values = [value for _, value in keys]
        counts = {"dead_letters": await erasure.delete_dead_letters(connection, values)}
        counts |= await erasure.delete(connection, family)
        await erasure.redact_merges(connection, keys)  # other customers' merges that name them
        counts["suppressed"] = len(keys) if suppress else 0
        row = await erasure.record(
            connection,
            customers=family,
            survivor=survivor,
            requested=customer_id,
            token_id=token_id,
            suppress=suppress,
            counts=counts,
        )
        if suppress:
            await suppressions.add(
                connection, keys, reason="erasure", token_id=token_id, erasure_id=row["id"]
            )
    return _erasure(row)


_COUNTS = ("customers", "events", "stage_transitions", "identities", "merges", "dead_letters",
           "suppressed")  # fmt: skip


def _erasure(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "customer_id": row["customer_id"],
        "requested_id": row["requested_id"],
        "erased_at": row["erased_at"],
        "suppress": row["suppress"],
        "counts": {name: row[name] for name in _COUNTS},
    }
