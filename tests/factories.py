"""Builders for canonical touchpoints, for tests that talk to the topic directly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from app.touchpoint import Channel, Identifier, Touchpoint, new_event_id

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def touchpoint(
    source_id: uuid.UUID,
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    event: str | None = "Product Viewed",
    type: str = "track",
    channel: str = "web",
    at: datetime | int = 0,
    message_id: str | None = None,
    extra_ids: list[tuple[str, str]] | None = None,
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
) -> Touchpoint:
    when = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    ids = [Identifier(kind="user_id", value=user_id)] if user_id else []
    if anonymous_id:
        ids.append(Identifier(kind="anonymous_id", value=anonymous_id))
    ids += [Identifier(kind=k, value=v) for k, v in extra_ids or []]
    return Touchpoint(
        event_id=new_event_id(),
        message_id=message_id or str(uuid.uuid4()),
        source_id=source_id,
        channel=Channel(channel),
        type=type,  # type: ignore[arg-type]
        event=event,
        user_id=user_id,
        anonymous_id=anonymous_id,
        identifiers=ids,
        traits=traits or {},
        properties=properties or {},
        occurred_at=when,
        received_at=when,
    )
