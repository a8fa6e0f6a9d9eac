"""Stage assignment for a batch: each customer's events stepped through the journey model
in ``occurred_at`` order, continuing from the customer's stored journey state."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

from app.identity.service import Resolution
from app.journey.model import JourneyModel, JourneyState
from app.journey.rules import EventFacts
from app.touchpoint import Touchpoint


def facts(tp: Touchpoint) -> EventFacts:
    return EventFacts(
        type=tp.type, event=tp.event, channel=tp.channel.value, properties=tp.properties
    )


def assign_stages(
    model: JourneyModel, touchpoints: Sequence[Touchpoint], resolution: Resolution
) -> list[str | None]:
    """The customer's stage once each event is applied; updates ``resolution.customers``."""
    by_customer: dict[uuid.UUID, list[int]] = defaultdict(list)
    for index, cid in enumerate(resolution.customer_of):
        by_customer[cid].append(index)
    stages: list[str | None] = [None] * len(touchpoints)
    for cid, indexes in by_customer.items():
        customer = resolution.customers[cid]
        state = JourneyState.from_json(customer.journey_state)
        indexes.sort(key=lambda i: touchpoints[i].occurred_at)
        for i in indexes:
            model.step(state, facts(touchpoints[i]))
            stages[i] = state.current_stage
        customer.journey_state = state.to_json()
        customer.current_stage = state.current_stage
        customer.furthest_stage = state.furthest_stage
    return stages
