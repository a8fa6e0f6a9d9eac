"""Opaque keyset cursors: where a page ended, for the next page to start after.

A cursor is the list it pages (a tag: :class:`Paged`) and the last item's position, two
strings, as a JSON array of three strings in unpadded base64url: opaque to clients, cheap to
read back, and the same for every paged read (the timeline's ``(occurred_at, event_id)``,
the journey's ``(entered_at, event_id)``, an identity list's ``(kind, value)``, the
abandoned carts' ``(occurred_at, event_id)``). Reading one back never trusts it: anything
but a position this API wrote for the same list is :class:`~app.errors.InvalidRequest` (a
400 problem), never a failed query, nor a page of one list read from a position in another
(a journey's cursor on the timeline is the same shape of time and id).

The timeline's cursors were written untagged (the two strings alone) before: those clients
hold are still read, by the timeline only (:data:`UNTAGGED`).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

import orjson

from app.errors import InvalidRequest
from app.kit.query import utc_instant

T = TypeVar("T")

NOT_ISSUED = "the cursor is not one this API issued"
OTHER_LIST = "the cursor is one the {} list issued, not this one"


class Paged(StrEnum):
    """What a cursor pages: its tag, the first string of its array."""

    TIMELINE = "timeline"
    JOURNEY = "journey"
    IDENTITIES = "identities"
    ABANDONED_CARTS = "abandoned-carts"


_TAGS = frozenset(Paged)

# The list whose cursors were issued untagged, from the first release on, and are still read
# as its own: the README promises a timeline cursor keeps working. The journey's, the
# identities' and the abandoned carts' were tagged from their first release; an untagged
# cursor there would be a timeline's (the same shape), read as a position it is not.
UNTAGGED = Paged.TIMELINE


def encode_cursor(paged: Paged, first: str, second: str) -> str:
    raw = orjson.dumps([paged, first, second])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, paged: Paged, read: Callable[[str, str], T]) -> T:
    """The position :func:`encode_cursor` wrote for ``paged``, as ``read`` makes it of its
    two strings (raising ``ValueError`` for strings that are no position);
    :class:`InvalidRequest` for anything else, whatever JSON it holds: saying so for a
    cursor of another list."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        match orjson.loads(raw):
            case [str() as tag, str() as first, str() as second] if tag == paged:
                return read(first, second)
            case [str() as tag, str(), str()] if tag in _TAGS:
                raise InvalidRequest(OTHER_LIST.format(tag))
            case [str() as first, str() as second] if paged is UNTAGGED:
                return read(first, second)
    except ValueError:  # not base64, not JSON (both ValueErrors), or `read` refused it
        pass
    raise InvalidRequest(NOT_ISSUED)


def encode_time_and_id(paged: Paged, at: datetime, item_id: uuid.UUID | str) -> str:
    """The cursor of an item ordered by a time, then an id (events, stage transitions)."""
    return encode_cursor(paged, at.isoformat(), str(item_id))


def time_and_id(at: str, item_id: str) -> tuple[datetime, uuid.UUID]:
    """A :func:`encode_time_and_id` position's strings read back (for :func:`decode_cursor`):
    the time in UTC (Python's years 1 to 9999, as PostgreSQL is sent it) and the id."""
    return utc_instant(datetime.fromisoformat(at)), uuid.UUID(item_id)
