"""SQL of the changes feed."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Live customers, and customers erased (app.customers.service.erase), in one order: each
# side's first page, then the first of both.
_CHANGED_AFTER = text(
    """
    SELECT id, merged_into, traits, current_stage, furthest_stage, updated_at, erased,
           change_xid::text AS change_xid
    FROM (
        (SELECT id, merged_into, traits, current_stage, furthest_stage, updated_at,
                false AS erased, change_xid
         FROM customers
         WHERE (change_xid, id) > (CAST(:xid AS text)::xid8, :after)
           AND change_xid < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY change_xid, id
         LIMIT :limit)
        UNION ALL
        (SELECT c.customer_id, NULL, '{}'::jsonb, NULL, NULL, e.erased_at, true, c.change_xid
         FROM erased_customers c JOIN erasures e ON e.id = c.erasure_id
         WHERE (c.change_xid, c.customer_id) > (CAST(:xid AS text)::xid8, :after)
           AND c.change_xid < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY c.change_xid, c.customer_id
         LIMIT :limit)
    ) AS changed
    ORDER BY changed.change_xid, id
    LIMIT :limit
    """
)


async def changed_after(
    session: AsyncSession, xid: int, after: uuid.UUID, limit: int
) -> Sequence[Any]:
    result = await session.execute(
        _CHANGED_AFTER, {"xid": str(xid), "after": after, "limit": limit}
    )
    return result.all()


async def identities_of(
    session: AsyncSession, customer_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[str, str]]]:
    if not customer_ids:
        return {}
    result = await session.execute(
        text(
            "SELECT customer_id, kind, value FROM identities"
            " WHERE customer_id = ANY(:ids) ORDER BY kind, value"
        ),
        {"ids": list(customer_ids)},
    )
    out: dict[uuid.UUID, list[tuple[str, str]]] = defaultdict(list)
    for customer_id, kind, value in result:
        out[customer_id].append((kind, value))
    return out
