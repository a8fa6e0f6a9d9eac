"""SQL of the timeline read side: keyset pagination over (occurred_at, event_id) DESC,
served by ``ix_events_customer_timeline``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Event


@dataclass(frozen=True, slots=True)
class TimelineQuery:
    customer_id: uuid.UUID
    limit: int
    after: tuple[datetime, uuid.UUID] | None = None
    channels: Sequence[str] = ()
    types: Sequence[str] = ()
    stages: Sequence[str] = ()
    since: datetime | None = None
    until: datetime | None = None


# What a timeline item shows: plain columns, not ORM entities (no identity map or
# attribute instrumentation for rows that are only serialised).
ITEM_COLUMNS = (
    Event.event_id,
    Event.message_id,
    Event.type,
    Event.event,
    Event.channel,
    Event.occurred_at,
    Event.received_at,
    Event.stage,
    Event.properties,
    Event.context,
    Event.flags,
)


async def page(session: AsyncSession, q: TimelineQuery) -> Sequence[RowMapping]:
    """Up to ``q.limit + 1`` events, newest first (the extra one tells whether more exist)."""
    stmt = select(*ITEM_COLUMNS).where(Event.customer_id == q.customer_id)
    if q.channels:
        stmt = stmt.where(Event.channel.in_(q.channels))
    if q.types:
        stmt = stmt.where(Event.type.in_(q.types))
    if q.stages:
        stmt = stmt.where(Event.stage.in_(q.stages))
    if q.since is not None:
        stmt = stmt.where(Event.occurred_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(Event.occurred_at < q.until)
    if q.after is not None:
        stmt = stmt.where(tuple_(Event.occurred_at, Event.event_id) < tuple_(*q.after))
    stmt = stmt.order_by(Event.occurred_at.desc(), Event.event_id.desc()).limit(q.limit + 1)
    return (await session.execute(stmt)).mappings().all()
