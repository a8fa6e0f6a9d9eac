"""SQL of the changes feed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.repository import identity_summary

# Live customers, and customers erased (app.customers.service.erase), in one order: each
# side's first page, then the first of both. Each lists its identities as a profile does:
# bounded, with counts (an erased customer has none left).
_CHANGED_AFTER = text(
    f"""
    SELECT changed.id, changed.merged_into, changed.traits, changed.current_stage,
           changed.furthest_stage, changed.updated_at, changed.erased,
           changed.change_xid::text AS change_xid,
           s.identities, s.identity_counts, s.identity_count, s.identities_truncated
    FROM (
        SELECT * FROM (
            (SELECT id, merged_into, traits, current_stage, furthest_stage, updated_at,
                    false AS erased, change_xid
             FROM customers
             WHERE (change_xid, id) > (CAST(:xid AS text)::xid8, :after)
               AND change_xid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY change_xid, id
             LIMIT :limit)
            UNION ALL
            (SELECT c.customer_id, NULL, '{{}}'::jsonb, NULL, NULL, e.erased_at, true,
                    c.change_xid
             FROM erased_customers c JOIN erasures e ON e.id = c.erasure_id
             WHERE (c.change_xid, c.customer_id) > (CAST(:xid AS text)::xid8, :after)
               AND c.change_xid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY c.change_xid, c.customer_id
             LIMIT :limit)
        ) AS both_sides
        ORDER BY change_xid, id
        LIMIT :limit
    ) AS changed CROSS JOIN LATERAL ({identity_summary("changed.id")}) s
    ORDER BY changed.change_xid, changed.id
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
