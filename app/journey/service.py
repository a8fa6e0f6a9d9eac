"""Journey stages for a batch, inside the pipeline's transaction.

Two steps around the timeline write:
1. :func:`plan_stages` (pure): each customer's new events stepped through the model in
   ``occurred_at`` order, continuing from the stored journey state.
2. :func:`persist` (after the events are inserted): writes the customers' journey columns.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from app.identity.service import Resolution
from app.journey import repository
from app.journey.model import JourneyModel, JourneyState
from app.journey.rules import EventFacts
from app.touchpoint import Touchpoint


@dataclass(slots=True)
class StagePlan:
    stage_of: list[str | None]
    states: dict[uuid.UUID, JourneyState] = field(default_factory=dict)


def facts(tp: Touchpoint) -> EventFacts:
    return EventFacts(
        type=tp.type, event=tp.event, channel=tp.channel.value, properties=tp.properties
    )


def plan_stages(
    model: JourneyModel, touchpoints: Sequence[Touchpoint], resolution: Resolution
) -> StagePlan:
    """The customer's stage once each event is applied (``stage_of[i]`` for event i)."""
    by_customer: dict[uuid.UUID, list[int]] = defaultdict(list)
    for index, cid in enumerate(resolution.customer_of):
        by_customer[cid].append(index)
    plan = StagePlan(stage_of=[None] * len(touchpoints))
    for cid, indexes in by_customer.items():
        state = JourneyState.from_json(resolution.customers[cid].journey_state)
        indexes.sort(key=lambda i: touchpoints[i].occurred_at)
        for i in indexes:
            model.step(state, facts(touchpoints[i]))
            plan.stage_of[i] = state.current_stage
        plan.states[cid] = state
    return plan


async def persist(
    conn: asyncpg.Connection[Any],
    model: JourneyModel,
    touchpoints: Sequence[Touchpoint],
    resolution: Resolution,
    plan: StagePlan,
) -> None:
    """Write each touched customer's journey state (events are already inserted)."""
    await repository.save_states(conn, plan.states)
