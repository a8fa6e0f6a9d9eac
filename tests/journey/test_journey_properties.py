"""Properties of stage assignment that hold for every event sequence and every preset."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.journey import EventFacts, JourneyState, StepResult, load_model
from app.journey.loader import PRESETS
from app.journey.rules import CHANNELS, EVENT_TYPES

MODELS = {name: load_model(name) for name in PRESETS}

EVENT_NAMES = [
    "Ad Clicked",
    "Products Searched",
    "Signed Up",
    "Subscribed",
    "Unsubscribed",
    "Product Viewed",
    "product viewed",
    "Cart Viewed",
    "Checkout Step Completed",
    "Order Completed",
    "In-Store Purchase",
    "Order Refunded",
    "Plan Upgraded",
    "Onboarding Completed",
    "Support Ticket Opened",
    "Loyalty Joined",
    "Review Submitted",
    "Referral Sent",
    "Post Shared",
    "Followed",
    "Store Visited",
    "Email Opened",
]

properties = st.fixed_dictionaries(
    {},
    optional={
        "category": st.sampled_from(["blog", "guide", "shop", None]),
        "revenue": st.one_of(st.floats(allow_nan=False), st.integers(), st.text(max_size=4)),
        "plan": st.fixed_dictionaries({}, optional={"price": st.integers(-5, 50)}),
    },
)
events = st.builds(
    EventFacts,
    type=st.sampled_from(sorted(EVENT_TYPES)),
    event=st.one_of(st.none(), st.sampled_from(EVENT_NAMES), st.text(max_size=12)),
    channel=st.sampled_from(sorted(CHANNELS)),
    properties=properties,
    # Flags that say nothing about who acted; machine activity has a property of its own.
    flags=st.lists(st.sampled_from(["clock_skew_corrected", "not_linked:user_id"]), max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(preset=st.sampled_from(PRESETS), history=st.lists(events, max_size=40))
def test_stepping_with_stored_state_matches_replay_and_ranks_are_consistent(
    preset: str, history: list[EventFacts]
) -> None:
    model = MODELS[preset]
    replayed_state, replayed = model.replay(history)

    stored: dict[str, Any] | None = None
    assigned: list[str] = []
    for facts, expected in zip(history, replayed, strict=True):
        state = JourneyState.from_json(stored)
        result = model.step(state, facts)
        assert result == expected
        if result.stage is not None:
            assigned.append(result.stage)
        # The current stage follows the latest stage-bearing event; the furthest is the
        # highest ever reached and never below the current one.
        assert state.current_stage == (assigned[-1] if assigned else None)
        assert state.furthest_stage == (max(assigned, key=model.rank) if assigned else None)
        if state.current_stage is not None:
            assert state.furthest_stage is not None
            assert model.rank(state.furthest_stage) >= model.rank(state.current_stage)
        stored = json.loads(json.dumps(state.to_json()))

    assert JourneyState.from_json(stored) == replayed_state
    assert replayed_state.seen_events == len(history)
    # Every rule counted exactly the events its base matchers accept, winner or not.
    for rule in model.rules:
        expected_count = sum(1 for facts in history if rule.matches(facts))
        assert replayed_state.counters.get(rule.id, 0) == expected_count


@settings(max_examples=150, deadline=None)
@given(
    preset=st.sampled_from(PRESETS),
    history=st.lists(st.tuples(events, st.booleans()), max_size=40),
)
def test_machine_activity_leaves_every_journey_as_the_persons_own_events_make_it(
    preset: str, history: list[tuple[EventFacts, bool]]
) -> None:
    """Flagging any events of a history machine_activity gives the journey of the others
    alone, and each flagged event assigns nothing."""
    model = MODELS[preset]
    marked = [
        EventFacts(f.type, f.event, f.channel, f.properties, [*f.flags, "machine_activity"])
        if machine
        else f
        for f, machine in history
    ]
    state, results = model.replay(marked)
    own_state, own_results = model.replay([f for f, machine in history if not machine])

    assert state == own_state
    assert [r for r, (_, machine) in zip(results, history, strict=True) if not machine] == (
        own_results
    )
    for result, (_, machine) in zip(results, history, strict=True):
        if machine:
            assert result == StepResult(None, None, False, result.previous_stage)
