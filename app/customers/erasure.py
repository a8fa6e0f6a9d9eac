"""SQL of erasure (asyncpg; the caller owns the transaction and holds the writers' lock
exclusively: app.customers.service.erase)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

_LOCK = "SELECT id FROM customers WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
_IDENTITIES = "SELECT kind, value FROM identities WHERE customer_id = ANY($1::uuid[])"
# Each table's rows of the customers ($1), children before the rows they reference.
_DELETES = {
    "stage_transitions": "DELETE FROM stage_transitions WHERE customer_id = ANY($1::uuid[])",
    "events": "DELETE FROM events WHERE customer_id = ANY($1::uuid[])",
    "merges": "DELETE FROM merges WHERE survivor_id = ANY($1::uuid[])"
    " OR merged_id = ANY($1::uuid[])",
    "identities": "DELETE FROM identities WHERE customer_id = ANY($1::uuid[])",
    "customers": "DELETE FROM customers WHERE id = ANY($1::uuid[])",
}
# A dead letter holds the message as it came, so its values are as sent, not normalised:
# matched without regard to case, as a whole JSON string ("ada@example.com", quotes
# included: an id "42" is not every letter with a 42 in it), or as the whole Kafka key
# (the first of anonymous id, user id or identifier). Both sides go through the same
# `escape` encoding, which reads any bytes (a letter need not be UTF-8). Each letter is
# lowered once (`OFFSET 0` keeps the planner from inlining it into every comparison) and
# the values once: on 100,000 letters of 2 KB and 10 values, 2.3 s, where comparing each
# letter with each value as it went took 11.8 s, all of it while the pipeline waits.
# The ids of the letters that hold one of the values $1 (the export lists the same ones).
DEAD_LETTERS_HOLDING = """
    SELECT l.id FROM (
        SELECT id, lower(encode(payload, 'escape')) AS body,
               lower(encode(key, 'escape')) AS key
        FROM dead_letters OFFSET 0
    ) l, (
        SELECT array_agg(lower(encode(convert_to(v, 'UTF8'), 'escape'))) AS keys,
               array_agg(lower(encode(convert_to('"' || v || '"', 'UTF8'), 'escape')))
                   AS quoted
        FROM unnest($1::text[]) AS v
    ) needles
    WHERE l.key = ANY(needles.keys)
       OR EXISTS (SELECT FROM unnest(needles.quoted) q WHERE strpos(l.body, q) > 0)
"""
_DEAD_LETTERS = f"""
    DELETE FROM dead_letters d USING ({DEAD_LETTERS_HOLDING}) found WHERE d.id = found.id
"""  # noqa: S608 (constant SQL: the values are the parameter)
# The merge log of other customers names the identifiers of the event that linked them,
# which may hold the person's: a shared device's event carrying their email, which merge
# protection kept from linking them (`not_linked:email`), merged two other customers.
# Those merges stay (they are the others'); the person's identifiers ($1 kinds, $2 values)
# go from their lists. Each list is read once, its entries matched in a hash of the keys.
_REDACT_MERGES = """
    WITH keys AS (SELECT * FROM unnest($1::text[], $2::text[]) AS k(kind, value)),
    named AS (
        SELECT DISTINCT m.id FROM merges m
        CROSS JOIN LATERAL jsonb_array_elements(m.identifiers) AS x
        JOIN keys ON keys.kind = x->>'kind' AND keys.value = x->>'value'
    )
    UPDATE merges m SET identifiers = (
        SELECT coalesce(jsonb_agg(x ORDER BY n), '[]'::jsonb)
        FROM jsonb_array_elements(m.identifiers) WITH ORDINALITY AS e(x, n)
        WHERE NOT EXISTS (
            SELECT FROM keys WHERE keys.kind = x->>'kind' AND keys.value = x->>'value'
        )
    )
    FROM named WHERE m.id = named.id
"""
_RECORD = """
    INSERT INTO erasures (customer_id, requested_id, token_id, suppress, customers, events,
                          stage_transitions, identities, merges, dead_letters, suppressed)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    RETURNING *
"""
_ERASED = """
    INSERT INTO erased_customers (customer_id, erasure_id)
    SELECT unnest($1::uuid[]), $2
"""
_PREVIOUS = """
    SELECT e.* FROM erased_customers c JOIN erasures e ON e.id = c.erasure_id
    WHERE c.customer_id = $1
"""


async def lock(conn: asyncpg.Connection[Any], customers: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Lock the customers' rows in ascending id order (the pipeline's order); those there."""
    return [r[0] for r in await conn.fetch(_LOCK, list(customers))]


async def identities(
    conn: asyncpg.Connection[Any], customers: Sequence[uuid.UUID]
) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in await conn.fetch(_IDENTITIES, list(customers))]


async def delete_dead_letters(conn: asyncpg.Connection[Any], values: Sequence[str]) -> int:
    """Delete the dead letters that hold any of ``values``; how many."""
    if not values:
        return 0
    return _count(await conn.execute(_DEAD_LETTERS, sorted(set(values))))


async def delete(conn: asyncpg.Connection[Any], customers: Sequence[uuid.UUID]) -> dict[str, int]:
    """Delete every row of the customers; how many of each table."""
    ids = list(customers)
    return {table: _count(await conn.execute(sql, ids)) for table, sql in _DELETES.items()}


async def redact_merges(conn: asyncpg.Connection[Any], keys: Sequence[tuple[str, str]]) -> int:
    """Take the identifiers ``keys`` off the merge log's other entries; how many changed."""
    if not keys:
        return 0
    kinds, values = [k for k, _ in keys], [v for _, v in keys]
    return _count(await conn.execute(_REDACT_MERGES, kinds, values))


async def record(
    conn: asyncpg.Connection[Any],
    *,
    customers: Sequence[uuid.UUID],
    survivor: uuid.UUID,
    requested: uuid.UUID,
    token_id: uuid.UUID | None,
    suppress: bool,
    counts: dict[str, int],
) -> asyncpg.Record:
    """The audit row of an erasure, and each erased customer id for the changes feed."""
    row = await conn.fetchrow(
        _RECORD,
        survivor,
        requested,
        token_id,
        suppress,
        counts["customers"],
        counts["events"],
        counts["stage_transitions"],
        counts["identities"],
        counts["merges"],
        counts["dead_letters"],
        counts["suppressed"],
    )
    assert row is not None
    await conn.execute(_ERASED, list(customers), row["id"])
    recorded: asyncpg.Record = row
    return recorded


async def previous(conn: asyncpg.Connection[Any], customer_id: uuid.UUID) -> asyncpg.Record | None:
    """The audit row of the erasure that removed ``customer_id``, if one did."""
    return await conn.fetchrow(_PREVIOUS, customer_id)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # "DELETE 3"
