"""SQL of the profile read side.

The survivor of a merged id is found in one statement (:data:`_CHAIN`, ``$1`` the id), run by
asyncpg itself on the read pool (:func:`profile`, :func:`survivor_id`) or through a session
(:func:`survivor`, whose dialect passes ``$n`` parameters through as they are)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

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
_SURVIVOR = f"{_CHAIN} SELECT {_LAST}"
# A profile's JSON columns come as the text Postgres writes and go into the answer as they
# are (``orjson.Fragment``); identities sorted by kind, then value.
_PROFILE = f"""{_CHAIN}
    SELECT c.id, c.traits::text AS traits, c.current_stage, c.furthest_stage,
           c.first_seen_at, c.last_seen_at, c.event_count, c.channel_counts::text AS channel_counts,
           (SELECT coalesce(jsonb_agg(jsonb_build_object('kind', i.kind, 'value', i.value)
                                      ORDER BY i.kind, i.value), '[]')
            FROM identities i WHERE i.customer_id = c.id)::text AS identities
    FROM customers c WHERE c.id = {_LAST}
"""  # noqa: S608 (constant SQL: the id is the parameter)
_OWNER = "SELECT customer_id FROM identities WHERE kind = $1 AND value = $2"


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


async def owner_of(connection: asyncpg.Connection[Any], kind: str, value: str) -> uuid.UUID | None:
    owner: uuid.UUID | None = await connection.fetchval(_OWNER, kind, value)
    return owner


async def survivor(session: AsyncSession, customer_id: uuid.UUID) -> Customer | None:
    """:func:`survivor_id`'s customer, in a session."""
    connection = await session.connection()
    found = (await connection.exec_driver_sql(_SURVIVOR, (customer_id,))).scalar()
    return None if found is None else await session.get(Customer, found)
