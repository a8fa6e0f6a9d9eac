"""Journey stages for a pipeline batch, inside the batch's transaction.

Two steps around the timeline write (`app.pipeline.handler`):

1. :func:`plan_stages` (pure): each customer's new events stepped through the model in
   (occurred_at, event_id) order, continuing from the stored journey state. Gives every
   event its stage (``events.stage``: the customer's current stage once it is applied) and
   the stage transitions the batch causes.
   A customer the batch created goes in with its journey columns (:func:`new_journey`).
2. :func:`persist` (after the events are inserted): the common case appends the batch's
   transitions, closes each customer's previous open transition and saves the states, in a
   few array-bound statements for the whole batch. A customer whose stored journey the plan
   cannot simply extend is *recomputed* from its stored timeline instead
   (`app.journey.history.recompute`):

   * a late event: the batch holds an event ordered before the newest event already
     applied (``customers.journey_at``, ``journey_event_id``). The history before the late
     event stands: the replay resumes from the last stage transition before it, which keeps
     the journey state of that moment, so its cost is the events after that transition,
     not the whole timeline;
   * the identity step asked for it (``Resolution.replay``: merge survivors), from the
     checkpoint before the earliest event the merge brought (or the batch's earliest);
   * the stored journey was computed by another model (fingerprint differs), from the first
     event, so a model change converges customer by customer even before
     ``percorso journey rebuild`` runs.

   Either way the history ends up exactly as if all events had arrived in time order.

The read side (:func:`customer_journey`) serves what the pipeline wrote.

Locks: the pipeline has locked every customer of the batch (``FOR UPDATE``, in ascending id
order) before :func:`persist` runs, and every writer of journey
data takes those row locks first, so reading and rewriting a customer's history here is
race-free.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.schemas import answered_for
from app.customers.service import resolve_customer
from app.identity.service import Resolution
from app.journey import repository, writes
from app.journey.history import Recorder, recompute
from app.journey.model import JourneyModel, JourneyState
from app.journey.rules import EventFacts
from app.journey.schemas import CustomerJourney, TransitionOut
from app.journey.writes import SavedJourney, TransitionRow
from app.kit.cursor import Paged, decode_cursor, encode_time_and_id, time_and_id
from app.touchpoint import EventKey, Touchpoint


@dataclass(slots=True)
class StagePlan:
    """The batch's journey effects if every customer's stored history can be extended."""

    stage_of: list[str | None]  # per event of the batch
    recorders: dict[uuid.UUID, Recorder] = field(default_factory=dict)
    # Per customer: the batch's earliest event.
    earliest: dict[uuid.UUID, EventKey] = field(default_factory=dict)


_EVENT_KEY = attrgetter("occurred_at", "event_id")


def plan_stages(
    model: JourneyModel, touchpoints: Sequence[Touchpoint], resolution: Resolution
) -> StagePlan:
    """The customer's stage once each event is applied (``stage_of[i]`` for event i)."""
    by_customer: dict[uuid.UUID, list[int]] = defaultdict(list)
    for index, cid in enumerate(resolution.customer_of):
        by_customer[cid].append(index)
    plan = StagePlan(stage_of=[None] * len(touchpoints))
    order = list(map(_EVENT_KEY, touchpoints))  # each event's (occurred_at, event_id)
    # Flags the identity step gives events: stored with their own, so a replay sees them too.
    added = resolution.flags
    for cid, indexes in by_customer.items():
        indexes.sort(key=order.__getitem__)
        state = JourneyState.from_json(resolution.customers[cid].journey_state)
        recorder = plan.recorders[cid] = Recorder(model, cid, state)
        plan.earliest[cid] = order[indexes[0]]
        for i in indexes:
            tp = touchpoints[i]
            flags = tp.flags + added[i] if i in added else tp.flags
            facts = EventFacts(tp.type, tp.event, tp.channel.value, tp.properties, flags)
            plan.stage_of[i] = recorder.apply(facts, tp.occurred_at, tp.event_id)
    return plan


def new_journey(model: JourneyModel, plan: StagePlan, customer_id: uuid.UUID) -> SavedJourney:
    """The journey columns of a customer the batch created, known before anything is
    written: the plan is its whole history (:func:`persist` only adds its transitions; it
    is never replayed, as no customer older than the batch merges into it)."""
    return plan.recorders[customer_id].saved(model.fingerprint())


async def persist(
    conn: asyncpg.Connection[Any],
    model: JourneyModel,
    touchpoints: Sequence[Touchpoint],
    resolution: Resolution,
    plan: StagePlan,
) -> dict[uuid.UUID, SavedJourney]:
    """Write the batch's journey effects (its events are inserted already). See the module
    docstring for when a customer is recomputed instead of extended. Returns the journey
    columns of the known customers that were extended, for the caller's one profile UPDATE
    (recomputed customers are saved here; new ones went in with theirs: :func:`new_journey`)."""
    fingerprint = model.fingerprint()
    replay: set[uuid.UUID] = set()  # from the first event
    since: dict[uuid.UUID, EventKey] = {}  # from the checkpoint before this event
    for cid in plan.recorders.keys() | resolution.replay.keys():
        row = resolution.customers[cid].row  # as locked; None for a customer new in the batch
        earliest = plan.earliest.get(cid)
        if cid in resolution.replay:
            gained = resolution.replay[cid]
            if row is None or gained is None or row["journey_model"] != fingerprint:
                replay.add(cid)
            else:  # the batch's events are replayed too: they are not applied yet
                since[cid] = min(gained, earliest) if earliest else gained
        elif row is None:
            continue  # new in the batch: its plan is its whole history
        elif row["journey_model"] != fingerprint:
            replay.add(cid)  # computed by another model (or never)
        elif (
            earliest is not None
            and row["journey_at"] is not None
            and row["journey_event_id"] is not None
            and earliest < (row["journey_at"], row["journey_event_id"])
        ):
            since[cid] = earliest  # a late event

    saved: dict[uuid.UUID, SavedJourney] = {}
    exits: list[tuple[uuid.UUID, datetime]] = []
    transitions: list[TransitionRow] = []
    for cid, recorder in plan.recorders.items():
        if cid in replay or cid in since:
            continue
        is_new = resolution.customers[cid].is_new
        if not is_new:
            saved[cid] = recorder.saved(fingerprint)
        if recorder.first_entry is not None:
            if not is_new:
                exits.append((cid, recorder.first_entry))
            transitions.extend(recorder.transitions)
    # Close before inserting: at most one open transition per customer (unique index).
    await writes.close_open_transitions(conn, exits)
    await writes.insert_transitions(conn, transitions)
    await recompute(conn, model, replay | since.keys(), since=since)
    # A customer merged away has no journey of its own any more: its events now belong to
    # the survivor, whose recomputed history covers them.
    await writes.delete_transitions(conn, sorted(resolution.merged))
    return saved


async def customer_journey(
    session: AsyncSession,
    customer_id: uuid.UUID,
    model: JourneyModel,
    *,
    limit: int,
    cursor: str | None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> CustomerJourney:
    """A page of a customer's journey: its stages (on every page) and up to ``limit``
    transitions after ``cursor``, oldest first. A merged id answers with the survivor.
    NotFound if unknown; InvalidRequest for a cursor this API did not issue."""
    after = decode_cursor(cursor, Paged.JOURNEY, time_and_id) if cursor else None
    customer = await resolve_customer(session, customer_id)
    query = repository.TransitionsQuery(customer.id, limit, after, since, until)
    rows = await repository.transitions(session, query)
    more = len(rows) > limit
    rows = rows[:limit]
    return CustomerJourney(
        customer_id=customer.id,
        **answered_for(customer_id, customer.id),
        model=model.name,
        up_to_date=customer.journey_model == model.fingerprint(),
        current_stage=customer.current_stage,
        furthest_stage=customer.furthest_stage,
        transitions=[
            TransitionOut(
                from_stage=t.from_stage,
                to_stage=t.to_stage,
                entered_at=t.entered_at,
                exited_at=t.exited_at,
                event_id=t.event_id,
                channel=t.channel,
                event=t.event,
                rule=t.rule_id,
            )
            for t in rows
        ],
        next_cursor=encode_time_and_id(Paged.JOURNEY, rows[-1].entered_at, rows[-1].event_id)
        if more
        else None,
    )
