"""SQL of the timeline read side: keyset pagination over (occurred_at, event_id) DESC,
served by ``ix_events_customer_timeline``."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select, tuple_
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
ITEM_KEYS = tuple(c.key for c in ITEM_COLUMNS)


async def page(session: AsyncSession, q: TimelineQuery) -> list[dict[str, Any]]:
    """Up to ``q.limit + 1`` events, newest first (the extra one tells whether more exist),
    as plain dicts of :data:`ITEM_COLUMNS`."""
    params: dict[str, Any] = {"customer_id": q.customer_id, "limit": q.limit + 1}
    for name, values in (("channels", q.channels), ("types", q.types), ("stages", q.stages)):
        if values:
            params[name] = list(values)
    for name, value in (("since", q.since), ("until", q.until)):
        if value is not None:
            params[name] = value
    if q.after is not None:
        params["after_at"], params["after_id"] = q.after
    result = await session.execute(_statement(frozenset(params)), params)
    return [dict(zip(ITEM_KEYS, row, strict=True)) for row in result]


@functools.cache
def _statement(params: frozenset[str]) -> Select[Any]:
    """The statement for a set of parameters. Building a select costs about as much as
    running it, so each of the 64 shapes is built once."""
    stmt = select(*ITEM_COLUMNS).where(Event.customer_id == bindparam("customer_id"))
    for name, column in (
        ("channels", Event.channel),
        ("types", Event.type),
        ("stages", Event.stage),
    ):
        if name in params:
            stmt = stmt.where(column.in_(bindparam(name, expanding=True)))
    if "since" in params:
        stmt = stmt.where(Event.occurred_at >= bindparam("since"))
    if "until" in params:
        stmt = stmt.where(Event.occurred_at < bindparam("until"))
    if "after_at" in params:
        stmt = stmt.where(
            tuple_(Event.occurred_at, Event.event_id)
            < tuple_(bindparam("after_at"), bindparam("after_id"))
        )
    return stmt.order_by(Event.occurred_at.desc(), Event.event_id.desc()).limit(bindparam("limit"))
