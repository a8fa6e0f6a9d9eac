"""SQL of the profile read side.

The survivor of a merged id is found in one statement (:data:`_CHAIN`, ``$1`` the id), run by
asyncpg itself on the read pool (:func:`profile`, :func:`survivor_id`) or through a session
(:func:`survivor`, whose dialect passes ``$n`` parameters through as they are)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.erasure import DEAD_LETTERS_HOLDING
from app.customers.schemas import (
    PROFILE_IDENTITIES,
    PROFILE_IDENTITIES_PER_KIND,
    PROFILE_IDENTITY_KINDS,
)
from app.models import Customer

if TYPE_CHECKING:
    import asyncpg

# A merged id is one hop from its survivor: a merge re-points the customers merged into its
# loser, and migration 0008 flattened the chains stored before. Reads still follow links, up
# to this many: a consumer older than 0008, still running through an upgrade, writes chains,
# and a corrupt cycle must not loop.
MAX_MERGE_HOPS = 16

# The id ($1), then each customer it was merged into, with its distance from the id.
_CHAIN = f"""
    WITH RECURSIVE chain (id, merged_into, hops) AS (
        SELECT id, merged_into, 0 FROM customers WHERE id = $1
        UNION ALL
        SELECT c.id, c.merged_into, chain.hops + 1
        FROM customers c JOIN chain ON c.id = chain.merged_into
        WHERE chain.hops < {MAX_MERGE_HOPS}
    )
"""  # noqa: S608 (constant SQL: the id is the parameter)
_LAST = "(SELECT id FROM chain ORDER BY hops DESC LIMIT 1)"


def identity_summary(customer: str) -> str:
    """A subquery (for a ``CROSS JOIN LATERAL``) of the identities of the customer whose id
    is the SQL expression ``customer``, as a profile lists them: ``identities`` (a JSON array
    of ``{kind, value}``, by kind then value: at most ``PROFILE_IDENTITIES_PER_KIND`` of each
    kind, the first by value, and ``PROFILE_IDENTITIES`` in all), ``identity_counts`` (a
    JSON object: how many of each of its first ``PROFILE_IDENTITY_KINDS`` kinds),
    ``identity_count`` (all of them) and ``identities_truncated``. Its cost is a few rows of
    ``ix_identities_customer_id_kind_value`` per kind, and counting the customer's entries
    in it (an index-only scan): about 8 ms for 50,000 anonymous ids, where listing them all
    had been megabytes."""
    return f"""
        WITH kinds AS (
            SELECT kind, count(*) AS n FROM identities WHERE customer_id = {customer}
            GROUP BY kind
        ), listed AS (
            SELECT k.kind, v.value FROM kinds k CROSS JOIN LATERAL (
                SELECT i.value FROM identities i
                WHERE i.customer_id = {customer} AND i.kind = k.kind
                ORDER BY i.value LIMIT {PROFILE_IDENTITIES_PER_KIND}
            ) v
            ORDER BY k.kind, v.value LIMIT {PROFILE_IDENTITIES}
        ), totals AS (
            SELECT coalesce(sum(n), 0)::bigint AS n FROM kinds
        )
        SELECT (SELECT coalesce(jsonb_agg(jsonb_build_object('kind', kind, 'value', value)
                                          ORDER BY kind, value), '[]') FROM listed) AS identities,
               (SELECT coalesce(jsonb_object_agg(kind, n), '{{}}') FROM (
                    SELECT kind, n FROM kinds ORDER BY kind LIMIT {PROFILE_IDENTITY_KINDS}
                ) counted) AS identity_counts,
               totals.n AS identity_count,
               totals.n > (SELECT count(*) FROM listed) AS identities_truncated
        FROM totals
    """  # noqa: S608 (constant SQL: ``customer`` is a column, never a value)


_SURVIVOR = f"{_CHAIN} SELECT {_LAST}"
# A profile's JSON columns come as the text Postgres writes and go into the answer as they
# are (``orjson.Fragment``); identities as :func:`identity_summary` bounds them.
_PROFILE = f"""{_CHAIN}
    SELECT c.id, c.traits::text AS traits, c.current_stage, c.furthest_stage,
           c.first_seen_at, c.last_seen_at, c.event_count, c.channel_counts::text AS channel_counts,
           s.identities::text AS identities, s.identity_counts::text AS identity_counts,
           s.identity_count, s.identities_truncated
    FROM customers c CROSS JOIN LATERAL ({identity_summary("c.id")}) s
    WHERE c.id = {_LAST}
"""  # noqa: S608 (constant SQL: the id is the parameter)
_OWNER = "SELECT customer_id FROM identities WHERE kind = $1 AND value = $2"
# A page of a customer's identities ($1), by (kind, value): of one kind ($2) or all, after
# the previous page's last (kind, value). Each is a range of
# ix_identities_customer_id_kind_value, read in its order from where the page starts.
_IDENTITIES = "SELECT kind, value FROM identities WHERE customer_id = $1"
_ALL = f"{_IDENTITIES} ORDER BY kind, value LIMIT $2"
_ALL_AFTER = f"{_IDENTITIES} AND (kind, value) > ($2, $3) ORDER BY kind, value LIMIT $4"
_KIND = f"{_IDENTITIES} AND kind = $2 ORDER BY kind, value LIMIT $3"
# PostgreSQL starts the index scan at the kind's first entry when a kind is asked for, even
# with a (kind, value) bound: a cursor of that kind is a bound on the value instead, which it
# starts at. A cursor of another kind (from a walk of all kinds) keeps the row bound.
_KIND_AFTER_VALUE = f"{_IDENTITIES} AND kind = $2 AND value > $3 ORDER BY kind, value LIMIT $4"
_KIND_AFTER = (
    f"{_IDENTITIES} AND kind = $2 AND (kind, value) > ($3, $4) ORDER BY kind, value LIMIT $5"
)


async def survivor_id(
    connection: asyncpg.Connection[Any], customer_id: uuid.UUID
) -> uuid.UUID | None:
    """The id, or the one it was merged into (following the chain); None if unknown."""
    found: uuid.UUID | None = await connection.fetchval(_SURVIVOR, customer_id)
    return found


async def profile(
    connection: asyncpg.Connection[Any], customer_id: uuid.UUID
) -> asyncpg.Record | None:
    """The survivor's profile row (JSON columns as text, ``identities`` a JSON array of
    ``{kind, value}``), or None for an unknown id."""
    return await connection.fetchrow(_PROFILE, customer_id)


async def identities(
    connection: asyncpg.Connection[Any],
    customer_id: uuid.UUID,
    *,
    kind: str | None,
    after: tuple[str, str] | None,
    limit: int,
) -> list[dict[str, str]]:
    """Up to ``limit`` of the customer's identities (of ``kind`` only, if given) after
    ``after``, by kind then value, as ``{kind, value}`` dicts."""
    args: tuple[str, ...]
    if kind is None:
        query, args = (_ALL, ()) if after is None else (_ALL_AFTER, after)
    elif after is None:
        query, args = _KIND, (kind,)
    elif after[0] == kind:
        query, args = _KIND_AFTER_VALUE, (kind, after[1])
    else:
        query, args = _KIND_AFTER, (kind, *after)
    rows = await connection.fetch(query, customer_id, *args, limit)
    return [{"kind": row[0], "value": row[1]} for row in rows]


async def owner_of(connection: asyncpg.Connection[Any], kind: str, value: str) -> uuid.UUID | None:
    owner: uuid.UUID | None = await connection.fetchval(_OWNER, kind, value)
    return owner


async def survivor(session: AsyncSession, customer_id: uuid.UUID) -> Customer | None:
    """:func:`survivor_id`'s customer, in a session."""
    connection = await session.connection()
    found = (await connection.exec_driver_sql(_SURVIVOR, (customer_id,))).scalar()
    return None if found is None else await session.get(Customer, found)


# A survivor ($1) and every customer merged into it, at any distance (a merge re-points
# the customers merged into its loser, so one hop but for chains written before 0008).
_FAMILY = f"""
    WITH RECURSIVE family (id, hops) AS (
        SELECT id, 0 FROM customers WHERE id = $1
        UNION ALL
        SELECT c.id, family.hops + 1 FROM customers c JOIN family ON c.merged_into = family.id
        WHERE family.hops < {MAX_MERGE_HOPS}
    )
    SELECT id FROM family ORDER BY id
"""  # noqa: S608 (constant SQL: the id is the parameter)


async def family(connection: asyncpg.Connection[Any], survivor: uuid.UUID) -> list[uuid.UUID]:
    """``survivor`` and the customers merged into it, in ascending id order (the order
    customers are locked in); empty for an unknown id."""
    return [r[0] for r in await connection.fetch(_FAMILY, survivor)]


# What export writes, a row at a time: JSON columns as the text Postgres writes.
EXPORT_PROFILE = """
    SELECT id, created_at, updated_at, first_seen_at, last_seen_at, traits::text AS traits,
           traits_at, event_count, channel_counts::text AS channel_counts, current_stage,
           furthest_stage, journey_state::text AS journey_state, journey_model, journey_at,
           journey_event_id
    FROM customers WHERE id = $1
"""
EXPORT_IDENTITIES = """
    SELECT kind, value, customer_id, created_at FROM identities
    WHERE customer_id = ANY($1::uuid[]) ORDER BY kind, value
"""
EXPORT_MERGES = """
    SELECT id, survivor_id, merged_id, event_id, identifiers::text AS identifiers, merged_at
    FROM merges WHERE survivor_id = ANY($1::uuid[]) OR merged_id = ANY($1::uuid[]) ORDER BY id
"""
# One customer's ($1) at a time, each in its index's order (no sort however many).
EXPORT_TRANSITIONS = """
    SELECT customer_id, entered_at, exited_at, from_stage, to_stage, event_id, channel, event,
           rule_id
    FROM stage_transitions WHERE customer_id = $1 ORDER BY entered_at, event_id
"""
EXPORT_EVENTS = """
    SELECT event_id, customer_id, source_id, message_id, type, event, channel, occurred_at,
           sent_at, received_at, stored_at, stage, properties::text AS properties,
           traits::text AS traits, context::text AS context, flags::text AS flags
    FROM events WHERE customer_id = $1 ORDER BY occurred_at DESC, event_id DESC
"""
# The dead letters an erasure of the customer would delete: those holding one of its
# identifiers' values ($1), as sent (a letter's bytes need not be text: in base64).
EXPORT_DEAD_LETTERS = f"""
    SELECT id, topic, partition, "offset", item,
           translate(encode(key, 'base64'), E'\\n', '') AS key_base64,
           translate(encode(payload, 'base64'), E'\\n', '') AS payload_base64,
           reason, created_at, published_at
    FROM dead_letters WHERE id IN ({DEAD_LETTERS_HOLDING}) ORDER BY id
"""  # noqa: S608 (constant SQL: the values are the parameter)
# Rows a cursor fetches at once: the API holds this many of an export's rows at a time.
EXPORT_PREFETCH = 500


def rows(
    connection: asyncpg.Connection[Any], query: str, *args: Any
) -> AsyncIterator[asyncpg.Record]:
    """The rows of an ``EXPORT_*`` query through a server-side cursor, a few hundred at a
    time (the caller holds a transaction open on ``connection``)."""
    return connection.cursor(query, *args, prefetch=EXPORT_PREFETCH).__aiter__()
