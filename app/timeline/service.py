"""Timeline reads: opaque keyset cursors, newest first."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.customers.schemas import answered_for
from app.customers.service import survivor_id
from app.kit.cursor import decode_cursor, encode_time_and_id, time_and_id
from app.timeline import repository
from app.timeline.repository import TimelineQuery

if TYPE_CHECKING:
    import asyncpg


async def timeline(
    connection: asyncpg.Connection[Any],
    customer_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    channels: list[str],
    types: list[str],
    stages: list[str],
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    """A page, as the JSON-ready dict of a ``TimelinePage`` (``app.timeline.schemas``): the
    endpoint writes it with orjson, as validating our own columns again cost more than the
    query did."""
    after = decode_cursor(cursor, time_and_id) if cursor else None
    query = TimelineQuery(
        customer_id=customer_id,
        limit=limit,
        after=after,
        channels=channels,
        types=types,
        stages=stages,
        since=since,
        until=until,
    )
    # The page first: an id that owns events is a live customer (a merge moves the
    # merged customer's events in the transaction that marks it merged), so the usual
    # request needs no lookup. An empty page may be a merged id (answered with its
    # survivor's timeline) or an unknown one (404).
    rows = await repository.page(connection, query)
    survivor = customer_id
    if not rows:
        survivor = await survivor_id(connection, customer_id)
        if survivor != customer_id:
            rows = await repository.page(connection, replace(query, customer_id=survivor))
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "customer_id": survivor,
        **answered_for(customer_id, survivor),
        "items": rows,
        "next_cursor": encode_time_and_id(rows[-1]["occurred_at"], rows[-1]["event_id"])
        if more and rows
        else None,
    }
