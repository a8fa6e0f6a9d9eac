"""Timeline reads: opaque keyset cursors, newest first."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.customers.service import page_of
from app.kit.cursor import Paged, decode_cursor, encode_time_and_id, time_and_id
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
    after = decode_cursor(cursor, Paged.TIMELINE, time_and_id) if cursor else None
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
    return await page_of(
        connection,
        customer_id,
        limit,
        # The query as built for the id asked for; another for its survivor.
        lambda customer: repository.page(
            connection, query if customer is customer_id else replace(query, customer_id=customer)
        ),
        lambda last: encode_time_and_id(Paged.TIMELINE, last["occurred_at"], last["event_id"]),
    )
