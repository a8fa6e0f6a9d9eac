"""Stage assignment through journey models: presets, counters, first touch, state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.journey import EventFacts, JourneyModel, JourneyState, StepResult, load_model
from app.journey import model as model_module


def track(event: str, channel: str = "web", **properties: Any) -> EventFacts:
    return EventFacts(type="track", event=event, channel=channel, properties=properties, flags=[])


def page(name: str | None = None, channel: str = "web", **properties: Any) -> EventFacts:
    return EventFacts(type="page", event=name, channel=channel, properties=properties, flags=[])


def identify(channel: str = "crm") -> EventFacts:
    return EventFacts(type="identify", event=None, channel=channel, properties={}, flags=[])


def stages_of(model: JourneyModel, events: list[EventFacts]) -> list[str | None]:
    return [result.stage for result in model.replay(events)[1]]


def model_from(tmp_path: Path, text: str, name: str = "journey.toml") -> JourneyModel:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_model(str(path))


@pytest.mark.parametrize(
    ("preset", "stages"),
    [
        (
            "default",
            ("awareness", "interest", "consideration", "purchase", "use", "loyalty", "advocacy"),
        ),
        ("omnichannel", ("discovery", "evaluation", "purchase", "experience", "loyalty")),
        ("digital", ("awareness", "engagement", "transaction", "retention")),
        ("classic", ("awareness", "consideration", "purchase", "retention", "advocacy")),
    ],
)
def test_presets_load_with_their_stages(preset: str, stages: tuple[str, ...]) -> None:
    model = load_model(preset)
    assert model.name == preset
    assert model.stages == stages
    assert model.source == f"preset:{preset}"
    assert model.first_touch == stages[0]
    assert [model.rank(s) for s in stages] == list(range(len(stages)))


def test_default_preset_walks_a_customer_through_every_stage() -> None:
    model = load_model("default")
    events = [
        track("Ad Clicked", channel="ads"),  # first touch
        track("Newsletter Subscribed", channel="email"),
        track("Email Opened", channel="email"),  # not stage-bearing
        track("Product Viewed", product_id="sku-1"),
        track("Checkout Started"),
        track("Order Completed", revenue=49.0),
        track("Onboarding Completed", channel="mobile"),
        track("In-Store Purchase", channel="in_store"),  # second purchase, any channel
        track("Review Submitted"),
    ]
    state, results = model.replay(events)
    assert [r.stage for r in results] == [
        "awareness",
        "interest",
        None,
        "consideration",
        "consideration",
        "purchase",
        "use",
        "loyalty",
        "advocacy",
    ]
    assert [r.rule_id for r in results][:2] == ["first_touch", "sign-up"]
    assert [r.changed for r in results] == [True, True, False, True, False, True, True, True, True]
    assert (state.current_stage, state.furthest_stage) == ("advocacy", "advocacy")
    assert state.seen_events == len(events)


@pytest.mark.parametrize(
    ("first_event", "stage"),
    [
        (track("Signed Up"), "interest"),
        (track("Subscribed", channel="email"), "interest"),
        (track("Product Viewed"), "consideration"),
        (track("Order Completed"), "purchase"),
        (track("Review Submitted"), "advocacy"),
        (track("Products Searched"), "awareness"),
        (track("Followed", channel="social"), "interest"),
        (page(category="blog"), "interest"),
        (page("Home"), "awareness"),
        (identify(), "awareness"),
    ],
)
def test_default_preset_places_a_first_event(first_event: EventFacts, stage: str) -> None:
    assert stages_of(load_model("default"), [first_event]) == [stage]


def test_omnichannel_preset_follows_a_customer_across_channels() -> None:
    events = [
        track("Post Liked", channel="social"),
        track("Store Visited", channel="in_store"),
        track("In-Store Purchase", channel="in_store"),
        track("Support Ticket Opened", channel="call_center"),
        track("Order Completed"),
        track("Email Opened", channel="email"),
    ]
    assert stages_of(load_model("omnichannel"), events) == [
        "discovery",
        "evaluation",
        "purchase",
        "experience",
        "loyalty",
        None,
    ]


def test_digital_preset_counts_only_paid_upgrades_as_transactions() -> None:
    events = [
        page("Pricing"),
        track("Signed Up"),
        track("Plan Upgraded", plan={"name": "free", "price": 0}),
        track("Plan Upgraded", plan={"name": "pro", "price": 29}),
        track("Subscription Renewed"),
    ]
    assert stages_of(load_model("digital"), events) == [
        "awareness",
        "engagement",
        None,
        "transaction",
        "retention",
    ]


def test_classic_preset_repeat_buyer_becomes_advocate() -> None:
    events = [
        track("Product Viewed"),
        track("Order Completed"),
        track("Order Completed"),
        track("Product Shared"),
    ]
    assert stages_of(load_model("classic"), events) == [
        "consideration",
        "purchase",
        "retention",
        "advocacy",
    ]


def test_customers_can_skip_stages() -> None:
    state, results = load_model("default").replay([track("Order Completed")])
    assert results == [StepResult("purchase", "purchase", changed=True, previous_stage=None)]
    assert (state.current_stage, state.furthest_stage) == ("purchase", "purchase")


def test_going_back_lowers_the_current_stage_but_not_the_furthest() -> None:
    model = load_model("default")
    state, results = model.replay([track("Order Completed"), track("Product Viewed")])
    assert results[-1] == StepResult("consideration", "shopping", True, "purchase")
    assert (state.current_stage, state.furthest_stage) == ("consideration", "purchase")
    model.step(state, track("Order Completed"))
    assert (state.current_stage, state.furthest_stage) == ("loyalty", "loyalty")


def test_events_without_a_stage_leave_the_stages_alone() -> None:
    model = load_model("default")
    state, _ = model.replay([track("Signed Up")])
    result = model.step(state, track("Email Opened", channel="email"))
    assert result == StepResult(None, None, changed=False, previous_stage="interest")
    assert (state.current_stage, state.furthest_stage, state.seen_events) == (
        "interest",
        "interest",
        2,
    )


def test_second_and_third_orders_are_loyalty() -> None:
    state, results = load_model("default").replay([track("Order Completed")] * 3)
    assert [(r.stage, r.rule_id) for r in results] == [
        ("purchase", "purchase"),
        ("loyalty", "repeat-purchase"),
        ("loyalty", "repeat-purchase"),
    ]
    # Both rules saw all three orders, though each won only some of them.
    assert state.counters["repeat-purchase"] == 3
    assert state.counters["purchase"] == 3


COUNTER_MODEL = """
stages = ["browsing", "buyer", "repeat"]

[[rules]]
id = "big-order"
stage = "buyer"
event = "Order Completed"
[[rules.where]]
property = "revenue"
op = "gt"
value = 100

[[rules]]
id = "second-order"
stage = "repeat"
event = "Order Completed"
count = { gte = 2 }

[[rules]]
id = "third-view"
stage = "browsing"
event = "Product Viewed"
count = { eq = 3 }
"""


def test_counters_advance_even_when_an_earlier_rule_wins(tmp_path: Path) -> None:
    model = model_from(tmp_path, COUNTER_MODEL)
    state, results = model.replay(
        [track("Order Completed", revenue=500), track("Order Completed", revenue=10)]
    )
    # The first order went to "big-order", yet "second-order" counted it.
    assert [r.rule_id for r in results] == ["big-order", "second-order"]
    assert state.counters == {"big-order": 1, "second-order": 2}


def test_count_eq_fires_exactly_once(tmp_path: Path) -> None:
    model = model_from(tmp_path, COUNTER_MODEL)
    assert stages_of(model, [track("Product Viewed")] * 4) == [None, None, "browsing", None]


FIRST_TOUCH_MODEL = """
stages = ["awareness", "interest", "consideration"]
first_touch = "interest"

[[rules]]
id = "ad"
stage = "awareness"
event = "Ad Clicked"

[[rules]]
id = "signup"
stage = "interest"
event = "Signed Up"

[[rules]]
id = "view"
stage = "consideration"
event = "Product Viewed"
"""


@pytest.mark.parametrize(
    ("first_event", "expected"),
    [
        ("Ad Clicked", ("interest", "first_touch")),  # rule's stage ranks earlier
        ("Signed Up", ("interest", "signup")),  # same stage: the rule is named
        ("Product Viewed", ("consideration", "view")),  # rule's stage ranks later
        ("Something Else", ("interest", "first_touch")),  # no rule
    ],
)
def test_first_touch_yields_to_later_stages_only(
    tmp_path: Path, first_event: str, expected: tuple[str, str]
) -> None:
    model = model_from(tmp_path, FIRST_TOUCH_MODEL)
    result = model.replay([track(first_event)])[1][0]
    assert (result.stage, result.rule_id) == expected


def test_first_touch_applies_to_the_first_event_only(tmp_path: Path) -> None:
    model = model_from(tmp_path, FIRST_TOUCH_MODEL)
    events = [track("Product Viewed"), track("Ad Clicked"), track("Something Else")]
    assert stages_of(model, events) == ["consideration", "awareness", None]


def by_machine(event: EventFacts) -> EventFacts:
    """The event as recorded when a mail privacy proxy or link scanner made it."""
    return EventFacts(
        event.type, event.event, event.channel, event.properties, ["machine_activity", "machine:x"]
    )


def test_machine_activity_assigns_no_stage_counts_for_no_rule_and_is_no_first_touch() -> None:
    model = load_model("default")
    click = track("Email Link Clicked", channel="email")
    state, results = model.replay(
        [by_machine(click), track("Ad Clicked", "ads"), by_machine(click)]
    )
    assert [(r.stage, r.rule_id) for r in results] == [
        (None, None),
        ("awareness", "first_touch"),
        (None, None),
    ]
    assert (state.current_stage, state.counters) == ("awareness", {})


def test_without_first_touch_an_unmatched_first_event_has_no_stage(tmp_path: Path) -> None:
    model = model_from(tmp_path, FIRST_TOUCH_MODEL.replace('first_touch = "interest"', ""))
    state, results = model.replay([track("Something Else"), track("Ad Clicked")])
    assert [r.stage for r in results] == [None, "awareness"]
    assert state.seen_events == 2


GLOB_MODEL = """
stages = ["a", "b", "c"]

[[rules]]
stage = "c"
event = ["order *", "checkout step ?"]

[[rules]]
stage = "b"
event = "Product [VC]iewed"
channel = ["web", "mobile"]

[[rules]]
stage = "a"
type = "page"
"""


@pytest.mark.parametrize(
    ("facts", "stage"),
    [
        (track("Order Completed"), "c"),
        (track("ORDER REFUNDED"), "c"),
        (track("order"), None),  # "order *" needs the space and something after it
        (track("Reorder Completed"), None),  # globs match the whole name
        (track("Checkout Step 2"), "c"),
        (track("Checkout Step 12"), None),
        (track("Product Viewed"), "b"),
        (track("product viewed", channel="mobile"), "b"),
        (track("Product Viewed", channel="email"), None),  # channel filter
        (track("Product Reviewed"), None),
        (page("Order Completed"), "c"),  # no type filter on that rule
        (page(None), "a"),  # unnamed page: only rules without event globs can match
    ],
)
def test_globs_ignore_case_and_filters_apply(
    tmp_path: Path, facts: EventFacts, stage: str | None
) -> None:
    model = model_from(tmp_path, GLOB_MODEL)
    assert stages_of(model, [facts]) == [stage]
    assert model.rules[0].id == "rule-1"


def test_channel_filter_in_default_preset() -> None:
    model = load_model("default")
    start = track("Ad Clicked", channel="ads")
    assert stages_of(model, [start, track("Followed", channel="social")])[1] == "interest"
    assert stages_of(model, [start, track("Followed", channel="web")])[1] is None


def test_rank_rejects_unknown_stages() -> None:
    model = load_model("default")
    assert model.rank("purchase") == 3
    with pytest.raises(ValueError, match="unknown stage 'purchse'"):
        model.rank("purchse")


def test_state_round_trips_through_json() -> None:
    model = load_model("default")
    state, _ = model.replay([track("Signed Up"), track("Order Completed")] * 2)
    restored = JourneyState.from_json(json.loads(json.dumps(state.to_json())))
    assert restored == state
    assert restored.counters is not state.counters  # no aliasing into the caller's dict


@pytest.mark.parametrize("empty", [None, {}])
def test_empty_state_json_is_a_new_customer(empty: dict[str, Any] | None) -> None:
    assert JourneyState.from_json(empty) == JourneyState({}, 0, None, None)


@pytest.mark.parametrize(
    "bad",
    [
        {"counters": {"purchase": "2"}},
        {"counters": [1, 2]},
        {"seen_events": -1},
        {"seen_events": True},
        {"current_stage": 3},
    ],
)
def test_corrupt_state_json_is_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="journey state"):
        JourneyState.from_json(bad)


def test_stepping_from_a_stored_state_equals_replaying() -> None:
    model = load_model("default")
    events = [
        track("Ad Clicked", channel="ads"),
        track("Order Completed"),
        track("Email Opened", channel="email"),
        track("Product Viewed"),
        track("Order Completed"),
    ]
    full_state, full_results = model.replay(events)
    stored: dict[str, Any] | None = None
    results = []
    for facts in events:  # one batch per event, state persisted as JSON in between
        state = JourneyState.from_json(stored)
        results.append(model.step(state, facts))
        stored = json.loads(json.dumps(state.to_json()))
    assert results == full_results
    assert JourneyState.from_json(stored) == full_state


def test_stage_unknown_to_a_changed_model_is_replaced() -> None:
    model = load_model("default")
    state = JourneyState({}, 5, current_stage="retired", furthest_stage="retired")
    result = model.step(state, track("Signed Up"))
    assert result == StepResult("interest", "sign-up", True, "retired")
    assert state.furthest_stage == "interest"


def test_fingerprint_is_stable_and_tracks_content(tmp_path: Path) -> None:
    assert load_model("default").fingerprint() == load_model("default").fingerprint()
    assert load_model("default").fingerprint() != load_model("classic").fingerprint()

    base = model_from(tmp_path, COUNTER_MODEL, "a.toml")
    cosmetic = model_from(
        tmp_path,
        '# a comment\nname = "other"\ndescription = "x"\n'
        + COUNTER_MODEL.replace('id = "big-order"', 'id = "big-order"\ndescription = "VIP"'),
        "b.toml",
    )
    recount = model_from(tmp_path, COUNTER_MODEL.replace("gte = 2", "gte = 3"), "c.toml")
    reordered = model_from(
        tmp_path, COUNTER_MODEL.replace('"browsing", "buyer"', '"buyer", "browsing"'), "d.toml"
    )
    assert cosmetic.fingerprint() == base.fingerprint()
    assert recount.fingerprint() != base.fingerprint()
    assert reordered.fingerprint() != base.fingerprint()
    assert len(base.fingerprint()) == 64


def test_the_engine_version_is_part_of_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored journeys of engine 1 (which let machine activity assign stages) are stale."""
    current = load_model("default").fingerprint()
    monkeypatch.setattr(model_module, "ENGINE_VERSION", 1)
    assert load_model("default").fingerprint() != current


def test_to_json_describes_the_model() -> None:
    model = load_model("default")
    doc = json.loads(json.dumps(model.to_json()))
    assert doc["stages"] == list(model.stages)
    assert doc["fingerprint"] == model.fingerprint()
    repeat = next(rule for rule in doc["rules"] if rule["id"] == "repeat-purchase")
    assert repeat == {
        "id": "repeat-purchase",
        "stage": "loyalty",
        "event": ["Order Completed", "In-Store Purchase"],
        "type": None,
        "channel": None,
        "where": [],
        "count": {"gte": 2},
        "description": None,
    }
