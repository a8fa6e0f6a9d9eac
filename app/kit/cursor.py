"""Opaque keyset cursors: where a page ended, for the next page to start after.

A cursor is the last item's position, two strings as a JSON array, in unpadded base64url:
opaque to clients, cheap to read back, and the same for every paged read (the timeline's
``(occurred_at, event_id)``, the journey's ``(entered_at, event_id)``, an identity list's
``(kind, value)``). Reading one back never trusts it: anything but a position this API
wrote is :class:`~app.errors.InvalidRequest` (a 400 problem), never a failed query.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import orjson

from app.errors import InvalidRequest
from app.kit.query import utc_instant

T = TypeVar("T")

NOT_ISSUED = "the cursor is not one this API issued"


def encode_cursor(first: str, second: str) -> str:
    raw = orjson.dumps([first, second])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, read: Callable[[str, str], T]) -> T:
    """The position :func:`encode_cursor` wrote, as ``read`` makes it of its two strings
    (raising ``ValueError`` for strings that are no position); :class:`InvalidRequest`
    for anything else, whatever JSON it holds."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        match orjson.loads(raw):
            case [str() as first, str() as second]:
                return read(first, second)
    except ValueError:  # not base64, not JSON (both ValueErrors), or `read` refused it
        pass
    raise InvalidRequest(NOT_ISSUED)


def encode_time_and_id(at: datetime, item_id: uuid.UUID | str) -> str:
    """The cursor of an item ordered by a time, then an id (events, stage transitions)."""
    return encode_cursor(at.isoformat(), str(item_id))


def time_and_id(at: str, item_id: str) -> tuple[datetime, uuid.UUID]:
    """A :func:`encode_time_and_id` position's strings read back (for :func:`decode_cursor`):
    the time in UTC (Python's years 1 to 9999, as PostgreSQL is sent it) and the id."""
    return utc_instant(datetime.fromisoformat(at)), uuid.UUID(item_id)
