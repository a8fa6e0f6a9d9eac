"""SQL of the journey read side (SQLAlchemy; the request owns the session)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import StageTransition


@dataclass(frozen=True, slots=True)
class TransitionsQuery:
    customer_id: uuid.UUID
    limit: int
    after: tuple[datetime, uuid.UUID] | None = None  # the previous page's last transition
    since: datetime | None = None
    until: datetime | None = None


async def transitions(session: AsyncSession, q: TransitionsQuery) -> list[StageTransition]:
    """Up to ``q.limit + 1`` of the customer's stage transitions after ``q.after``, oldest
    first (the extra one tells whether more exist). Keyset over (entered_at, event_id),
    which the primary key ``(customer_id, entered_at, event_id)`` serves in order: a page
    reads its own rows, however long the history."""
    t = StageTransition
    stmt = select(t).where(t.customer_id == q.customer_id)
    if q.after is not None:
        stmt = stmt.where(tuple_(t.entered_at, t.event_id) > q.after)
    if q.since is not None:
        stmt = stmt.where(t.entered_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(t.entered_at < q.until)
    stmt = stmt.order_by(t.entered_at, t.event_id).limit(q.limit + 1)
    return list((await session.execute(stmt)).scalars())
