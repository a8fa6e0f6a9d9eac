"""Profile writes for the pipeline (asyncpg, rows as one parameter: app.kit.bulk; the batch
owns the transaction): new customers go in with their final profile, known ones are updated."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app.journey.writes import SavedJourney
from app.kit import bulk


@dataclass(slots=True)
class ProfileDelta:
    """What one batch adds to one customer's profile (journey columns: app/journey)."""

    customer_id: uuid.UUID
    first_seen: datetime
    last_seen: datetime
    events: int = 0
    channels: dict[str, int] = field(default_factory=dict)
    # Trait values, each key's from its newest source, split against the stored traits'
    # time (``traits_since``; one for the whole dict): from a source at or after it they
    # overwrite (``traits``), from an older one they only fill a key the profile lacks
    # (``fill``). Sources go in oldest first (:meth:`add_traits`).
    traits: dict[str, Any] = field(default_factory=dict)
    fill: dict[str, Any] = field(default_factory=dict)
    traits_at: datetime | None = None  # the newest source's
    # The journey columns, when the journey step left them to this write (INSERT or UPDATE).
    journey: SavedJourney | None = None
    # The profile as the batch locked it (``first_seen_at``, ``last_seen_at``,
    # ``event_count``, ``channel_counts``, ``traits_at``); None for a customer the batch
    # created.
    stored: asyncpg.Record | None = None
    traits_since: datetime | None = field(init=False)  # the stored ``traits_at``

    def __post_init__(self) -> None:
        self.traits_since = None if self.stored is None else self.stored["traits_at"]

    def add_traits(self, traits: dict[str, Any], at: datetime) -> None:
        """A source's traits, set at ``at``: no older than those added before. (The
        pipeline's loop over events does the same inline.)"""
        since = self.traits_since
        (self.traits if since is None or at >= since else self.fill).update(traits)
        if self.traits_at is None or at > self.traits_at:
            self.traits_at = at

    def row(self) -> tuple[Any, ...]:
        """The profile's row for :data:`_APPLY` and :data:`_INSERT`. First and last seen,
        event count and channel counts are final: the batch's, added to the locked row's."""
        journey = self.journey
        if self.stored is None:  # created by this batch
            first, last = self.first_seen, self.last_seen
            events, channels = self.events, self.channels
        else:
            first = min(self.stored["first_seen_at"], self.first_seen)
            last = max(self.stored["last_seen_at"], self.last_seen)
            events = self.stored["event_count"] + self.events
            channels = orjson.loads(self.stored["channel_counts"])
            for channel, n in self.channels.items():
                channels[channel] = channels.get(channel, 0) + n
        traits, fill = _written(self.traits), _written(self.fill)
        if journey is None:
            return (self.customer_id, first, last, events, channels, traits, fill,
                    self.traits_at, False, None, None, None, None, None, None)  # fmt: skip
        state = journey.state
        return (
            self.customer_id, first, last, events, channels, traits, fill,
            self.traits_at, True, state.current_stage, state.furthest_stage, state.to_json(),
            journey.model, journey.at, journey.event_id,
        )  # fmt: skip


def _written(traits: dict[str, Any]) -> dict[str, Any] | orjson.Fragment:
    """Traits as JSON text of their own. Inside the rows (a list of lists) they would be two
    levels deeper than in the event, and orjson writes at most 254: an identify call's traits
    may be 253 deep (the API measures the call)."""
    return orjson.Fragment(orjson.dumps(traits)) if traits else traits


_PROFILES = bulk.rows_from(
    "$1",
    "id uuid, first_seen timestamptz, last_seen timestamptz, n bigint, channels jsonb,"
    " traits jsonb, fill jsonb, traits_at timestamptz, has_journey bool, current_stage text,"
    " furthest_stage text, state jsonb, model text, journey_at timestamptz, journey_event_id uuid",
)
_APPLY = f"""
    UPDATE customers c SET
        first_seen_at = u.first_seen,
        last_seen_at = u.last_seen,
        event_count = u.n,
        channel_counts = u.channels,
        traits = CASE WHEN u.traits_at IS NULL THEN c.traits
                      ELSE u.fill || c.traits || u.traits END,
        traits_at = GREATEST(c.traits_at, u.traits_at),
        current_stage = CASE WHEN u.has_journey THEN u.current_stage ELSE c.current_stage END,
        furthest_stage = CASE WHEN u.has_journey THEN u.furthest_stage ELSE c.furthest_stage END,
        journey_state = CASE WHEN u.has_journey THEN u.state ELSE c.journey_state END,
        journey_model = CASE WHEN u.has_journey THEN u.model ELSE c.journey_model END,
        journey_at = CASE WHEN u.has_journey THEN u.journey_at ELSE c.journey_at END,
        journey_event_id = CASE WHEN u.has_journey THEN u.journey_event_id
                                ELSE c.journey_event_id END,
        updated_at = now(),
        change_xid = pg_current_xact_id()
    FROM {_PROFILES} AS u
    WHERE c.id = u.id
"""  # noqa: S608 (constant SQL: the rows are the parameter)


_INSERT = f"""
    INSERT INTO customers (id, first_seen_at, last_seen_at, event_count, channel_counts, traits,
                           traits_at, current_stage, furthest_stage, journey_state,
                           journey_model, journey_at, journey_event_id)
    SELECT id, first_seen, last_seen, n, channels, traits, traits_at, current_stage,
           furthest_stage, coalesce(state, '{{}}'), model, journey_at, journey_event_id
    FROM {_PROFILES} AS u
"""  # noqa: S608 (constant SQL: the rows are the parameter)


async def insert_customers(
    conn: asyncpg.Connection[Any],
    new: Sequence[tuple[uuid.UUID, datetime]],
    deltas: Sequence[ProfileDelta],
) -> None:
    """The customers a batch created (``(id, first event's time)``, as the identity step
    lists them), each with its final profile when ``deltas`` has one for it (a customer
    merged into another new one in the same batch has none: it keeps the defaults).
    Spares the UPDATE that filling them in afterwards would cost (a new row version and
    its index entries per customer)."""
    if new:
        final = {d.customer_id: d for d in deltas}
        rows = [(final.get(cid) or ProfileDelta(cid, seen, seen)).row() for cid, seen in new]
        await conn.execute(_INSERT, bulk.rows(rows))


async def apply_deltas(conn: asyncpg.Connection[Any], deltas: Sequence[ProfileDelta]) -> None:
    """Fold the deltas into the profiles in one statement. The counts and times are folded
    here (:meth:`ProfileDelta.row`, from the rows the batch locked) rather than by a
    jsonb aggregate per row in SQL. Traits are merged by Postgres, so stored values Python
    would not write back exactly (a numeric of 20 digits, say) stay untouched: per key, the
    newest source's value (an event's, or a merged-away profile's) wins; against the stored
    traits, which have one time for them all (``traits_at``), it overwrites if it is no
    older, and otherwise only fills a missing key (the split is made in Python, against
    the locked row: :attr:`ProfileDelta.fill`). ``traits_at`` becomes the newest of all.

    Sets ``change_xid`` itself, which spares it the row trigger (see migration 0007)."""
    if deltas:
        ordered = sorted(deltas, key=lambda d: d.customer_id)
        await conn.execute(_APPLY, bulk.rows([d.row() for d in ordered]))
