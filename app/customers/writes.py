"""Profile updates for the pipeline (asyncpg, array-bound; the batch owns the transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app.journey.writes import SavedJourney


@dataclass(slots=True)
class ProfileDelta:
    """What one batch adds to one customer's profile (journey columns: app/journey)."""

    customer_id: uuid.UUID
    first_seen: datetime
    last_seen: datetime
    events: int = 0
    channels: dict[str, int] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    traits_at: datetime | None = None
    # The journey columns, when the journey step left them to this UPDATE.
    journey: SavedJourney | None = None
    # The profile as the batch locked it (``first_seen_at``, ``last_seen_at``,
    # ``event_count``, ``channel_counts``); None for a customer the batch created.
    stored: asyncpg.Record | None = None

    def folded(self) -> tuple[datetime, datetime, int, dict[str, int]]:
        """First and last seen, event count and channel counts once the batch is added.
        The row stays locked until the batch commits, so these are the final values."""
        if self.stored is None:  # created by this batch with the defaults
            return self.first_seen, self.last_seen, self.events, self.channels
        channels = orjson.loads(self.stored["channel_counts"])
        for channel, n in self.channels.items():
            channels[channel] = channels.get(channel, 0) + n
        return (
            min(self.stored["first_seen_at"], self.first_seen),
            max(self.stored["last_seen_at"], self.last_seen),
            self.stored["event_count"] + self.events,
            channels,
        )


async def apply_deltas(conn: asyncpg.Connection[Any], deltas: Sequence[ProfileDelta]) -> None:
    """Fold the deltas into the profiles in one statement. The counts and times are folded
    here (:meth:`ProfileDelta.folded`, from the rows the batch locked) rather than by a
    jsonb aggregate per row in SQL. Traits are merged by Postgres, so stored values Python
    would not write back exactly (a numeric of 20 digits, say) stay untouched: the newer
    event wins per key; traits from events older than the profile's newest only fill
    missing keys.

    Sets ``change_xid`` itself, which spares it the row trigger (see migration 0007)."""
    if not deltas:
        return
    ordered = sorted(deltas, key=lambda d: d.customer_id)
    folded = [d.folded() for d in ordered]
    await conn.execute(
        """
        UPDATE customers c SET
            first_seen_at = u.first_seen,
            last_seen_at = u.last_seen,
            event_count = u.n,
            channel_counts = u.channels::jsonb,
            traits = CASE
                WHEN u.traits_at IS NULL THEN c.traits
                WHEN c.traits_at IS NULL OR u.traits_at >= c.traits_at
                    THEN c.traits || u.traits::jsonb
                ELSE u.traits::jsonb || c.traits END,
            traits_at = GREATEST(c.traits_at, u.traits_at),
            current_stage = CASE WHEN u.has_journey THEN u.current_stage
                                 ELSE c.current_stage END,
            furthest_stage = CASE WHEN u.has_journey THEN u.furthest_stage
                                  ELSE c.furthest_stage END,
            journey_state = CASE WHEN u.has_journey THEN u.state::jsonb ELSE c.journey_state END,
            journey_model = CASE WHEN u.has_journey THEN u.model ELSE c.journey_model END,
            journey_at = CASE WHEN u.has_journey THEN u.journey_at ELSE c.journey_at END,
            journey_event_id = CASE WHEN u.has_journey THEN u.journey_event_id
                                    ELSE c.journey_event_id END,
            updated_at = now(),
            change_xid = pg_current_xact_id()
        FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::bigint[], $5::text[],
                    $6::text[], $7::timestamptz[], $8::bool[], $9::text[], $10::text[],
                    $11::text[], $12::text[], $13::timestamptz[], $14::uuid[])
             AS u(id, first_seen, last_seen, n, channels, traits, traits_at, has_journey,
                  current_stage, furthest_stage, state, model, journey_at, journey_event_id)
        WHERE c.id = u.id
        """,
        [d.customer_id for d in ordered],
        [f[0] for f in folded],
        [f[1] for f in folded],
        [f[2] for f in folded],
        [orjson.dumps(f[3]).decode() for f in folded],
        [orjson.dumps(d.traits).decode() for d in ordered],
        [d.traits_at for d in ordered],
        [d.journey is not None for d in ordered],
        [d.journey.state.current_stage if d.journey else None for d in ordered],
        [d.journey.state.furthest_stage if d.journey else None for d in ordered],
        [orjson.dumps(d.journey.state.to_json()).decode() if d.journey else None for d in ordered],
        [d.journey.model if d.journey else None for d in ordered],
        [d.journey.at if d.journey else None for d in ordered],
        [d.journey.event_id if d.journey else None for d in ordered],
    )
