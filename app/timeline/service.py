"""Timeline reads: opaque keyset cursors, newest first."""

from __future__ import annotations

import base64
import uuid
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from app.customers.schemas import answered_for
from app.customers.service import survivor_id
from app.errors import InvalidRequest
from app.timeline import repository
from app.timeline.repository import TimelineQuery
from app.timeline.schemas import utc_instant

if TYPE_CHECKING:
    import asyncpg


def encode_cursor(occurred_at: datetime, event_id: str) -> str:
    raw = orjson.dumps([occurred_at.isoformat(), event_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position :func:`encode_cursor` wrote; :class:`InvalidRequest` for anything else,
    whatever JSON it holds."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        match orjson.loads(raw):
            case [str() as at, str() as event_id]:
                return utc_instant(datetime.fromisoformat(at)), uuid.UUID(event_id)
    except ValueError:  # not base64, not JSON (both ValueErrors), or not a time and an id
        pass
    raise InvalidRequest("the cursor is not one this API issued")


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
    after = decode_cursor(cursor) if cursor else None
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
        "next_cursor": encode_cursor(rows[-1]["occurred_at"], rows[-1]["event_id"])
        if more and rows
        else None,
    }
