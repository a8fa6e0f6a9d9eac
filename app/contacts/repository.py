"""SQL of the changes feed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.repository import identity_summary

# Each change lists its customer's identities as a profile does: bounded, with counts.
_CHANGED_AFTER = text(
    f"""
    SELECT c.*, s.identities, s.identity_counts, s.identity_count, s.identities_truncated
    FROM (
        SELECT id, merged_into, traits, current_stage, furthest_stage, updated_at,
               change_xid::text AS change_xid
        FROM customers
        WHERE (change_xid, id) > (CAST(:xid AS text)::xid8, :after)
          AND change_xid < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY change_xid, id
        LIMIT :limit
    ) c CROSS JOIN LATERAL ({identity_summary("c.id")}) s
    ORDER BY c.change_xid::xid8, c.id
    """  # noqa: S608 (constant SQL: the values are parameters)
)


async def changed_after(
    session: AsyncSession, xid: int, after: uuid.UUID, limit: int
) -> Sequence[Any]:
    """Up to ``limit`` customers changed after ``(xid, after)``, in that order, with their
    identities as :func:`app.customers.repository.identity_summary` bounds them."""
    result = await session.execute(
        _CHANGED_AFTER, {"xid": str(xid), "after": after, "limit": limit}
    )
    return result.all()
