"""Merge protection policy, event planning and the sequential reference graph (pure)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.identity.identifiers import IdentityConfig, extract_identifiers
from app.identity.policy import (
    DEFAULT_LIMITS,
    DEFAULT_PRIORITY,
    MergePolicy,
    Plan,
    ReferenceGraph,
    plan_event,
    resolve_sequential,
    violates_limits,
)
from app.touchpoint import Identifier

POLICY = MergePolicy()


def ident(kind: str, value: str) -> Identifier:
    return Identifier(kind=kind, value=value)


def U(v: str) -> Identifier:
    return ident("user_id", v)


def A(v: str) -> Identifier:
    return ident("anonymous_id", v)


def E(v: str) -> Identifier:
    return ident("email", v)


def C(v: str) -> Identifier:
    return ident("crm_id", v)


def P(v: str) -> Identifier:
    return ident("phone", v)


def partition(customers: Sequence[int]) -> list[set[int]]:
    """Which events share a customer, independent of the ids handed out."""
    groups: dict[int, set[int]] = {}
    for event, customer in enumerate(customers):
        groups.setdefault(customer, set()).add(event)
    return sorted(groups.values(), key=min)


# --- MergePolicy -------------------------------------------------------------------------


def test_defaults() -> None:
    assert dict(POLICY.limits) == {"user_id": 1, "crm_id": 1, "email": 5, "phone": 5}
    assert POLICY.priority == ("user_id", "crm_id", "email", "phone")
    assert POLICY.limit("email") == 5
    assert POLICY.limit("anonymous_id") is None
    assert POLICY.limit("loyalty_card") is None


def test_parse_settings_strings() -> None:
    policy = MergePolicy.parse(" user_id=1, crm_id = 2 ,email=3", "crm_id, user_id")
    assert dict(policy.limits) == {"user_id": 1, "crm_id": 2, "email": 3}
    assert policy.priority == ("crm_id", "user_id")
    assert policy.limit("phone") is None  # not listed: unlimited


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_parse_blank_means_default(blank: str | None) -> None:
    policy = MergePolicy.parse(blank, blank)
    assert dict(policy.limits) == dict(DEFAULT_LIMITS)
    assert policy.priority == DEFAULT_PRIORITY


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("user_id", "'user_id' is not kind=number"),
        ("user_id=0", "must be a whole number >= 1"),
        ("user_id=-1", "must be a whole number >= 1"),
        ("user_id=one", "must be a whole number >= 1"),
        ("user_id=1.5", "must be a whole number >= 1"),
        ("user_id=1,user_id=2", "'user_id' appears twice"),
        ("User-Id=1", "is not an identifier kind"),
        ("user_id=1,,email=5", "'' is not kind=number"),
        ("=3", "'' is not an identifier kind"),
    ],
)
def test_parse_rejects_malformed_limits(limits: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        MergePolicy.parse(limits, None)
    assert repr(limits) in str(info.value)  # the message quotes the whole setting


@pytest.mark.parametrize(
    ("priority", "message"),
    [
        ("user_id,,email", "'' is not an identifier kind"),
        ("user_id,user_id", "appears twice"),
        ("Email", "is not an identifier kind"),
        ("user_id;email", "is not an identifier kind"),
    ],
)
def test_parse_rejects_malformed_priority(priority: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MergePolicy.parse(None, priority)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        MergePolicy(limits={"user_id": 0})
    with pytest.raises(ValueError, match="twice"):
        MergePolicy(priority=("email", "email"))


def test_rank_order_listed_then_custom_alphabetical_then_anonymous_id() -> None:
    kinds = ["anonymous_id", "zz_device", "phone", "loyalty_card", "email", "crm_id", "user_id"]
    kinds += ["loyalty", "a"]
    assert sorted(kinds, key=POLICY.rank) == [
        "user_id",
        "crm_id",
        "email",
        "phone",
        "a",
        "loyalty",
        "loyalty_card",
        "zz_device",
        "anonymous_id",
    ]
    custom = MergePolicy(priority=("email", "anonymous_id"))
    assert sorted(["user_id", "anonymous_id", "email"], key=custom.rank) == [
        "email",
        "anonymous_id",
        "user_id",
    ]


def test_violates_limits() -> None:
    assert violates_limits({"user_id": {"u1"}, "email": {"a", "b"}}, POLICY) == []
    assert violates_limits(
        {"email": {str(i) for i in range(6)}, "user_id": {"u1", "u2"}, "anonymous_id": set("ab")},
        POLICY,
    ) == ["user_id", "email"]


# --- plan_event ----------------------------------------------------------------------------


def test_plain_match_keeps_everything_and_points_at_the_owner() -> None:
    plan = plan_event([U("u1"), A("a1")], {U("u1"): "X"}, {"X": {"user_id": {"u1"}}}, POLICY)
    assert plan.kept == [U("u1"), A("a1")]
    assert plan.dropped == []
    assert plan.customers == ["X"]


def test_unknown_identifiers_mean_a_new_customer() -> None:
    plan: Plan[str] = plan_event([A("a1"), E("ada@example.com")], {}, {}, POLICY)
    assert plan.kept == [A("a1"), E("ada@example.com")]
    assert plan.customers == []


def test_empty_event() -> None:
    plan: Plan[str] = plan_event([], {}, {}, POLICY)
    assert (plan.kept, plan.dropped, plan.customers) == ([], [], [])


def test_login_merges_two_anonymous_customers() -> None:
    # Browsed as a1 (customer X), then on another device as a2 (Y), then logged in on both.
    owners = {A("a1"): "X", A("a2"): "Y", U("u1"): "Y"}
    existing = {"X": {"anonymous_id": {"a1"}}, "Y": {"anonymous_id": {"a2"}, "user_id": {"u1"}}}
    plan = plan_event([U("u1"), A("a1")], owners, existing, POLICY)
    assert plan.kept == [U("u1"), A("a1")]
    assert plan.customers == ["Y", "X"]


@pytest.mark.parametrize("second_user_known", [False, True])
def test_shared_device_keeps_two_users_apart(second_user_known: bool) -> None:
    owners = {A("tablet"): "X", U("u1"): "X"}
    existing = {"X": {"anonymous_id": {"tablet"}, "user_id": {"u1"}}}
    if second_user_known:
        owners[U("u2")] = "Y"
        existing["Y"] = {"user_id": {"u2"}}
    plan = plan_event([A("tablet"), U("u2")], owners, existing, POLICY)
    assert plan.kept == [U("u2")]
    assert plan.dropped == [A("tablet")]
    assert plan.customers == (["Y"] if second_user_known else [])


def test_event_carrying_two_crm_ids_keeps_the_first() -> None:
    plan: Plan[str] = plan_event([C("c1"), E("ada@example.com"), C("c2")], {}, {}, POLICY)
    assert plan.kept == [C("c1"), E("ada@example.com")]
    assert plan.dropped == [C("c2")]


def test_sixth_email_is_dropped_but_the_rest_of_the_event_stitches() -> None:
    emails = {f"e{i}@example.com" for i in range(5)}
    owners = {U("u1"): "X"}
    existing = {"X": {"user_id": {"u1"}, "email": emails}}
    event = [U("u1"), E("e5@example.com"), A("new-device")]
    plan = plan_event(event, owners, existing, POLICY)
    assert plan.kept == [U("u1"), A("new-device")]  # the anonymous id did not pay for it
    assert plan.dropped == [E("e5@example.com")]
    assert plan.customers == ["X"]
    # A known email is not a new value: nothing to drop.
    plan = plan_event([U("u1"), E("e0@example.com")], owners, existing, POLICY)
    assert plan.dropped == []


def test_priority_decides_which_identifier_gives_way() -> None:
    # Email e1 belongs to X (user u1); the event logs in as u2 with e1. u2 outranks e1, so
    # e1 stays with X and the event goes to a new customer.
    owners = {E("e1@x.com"): "X"}
    existing = {"X": {"user_id": {"u1"}, "email": {"e1@x.com"}}}
    plan = plan_event([E("e1@x.com"), U("u2")], owners, existing, POLICY)
    assert (plan.kept, plan.dropped, plan.customers) == ([U("u2")], [E("e1@x.com")], [])
    # With email ranked first, the email wins and the user id is dropped instead.
    email_first = MergePolicy(priority=("email", "user_id"))
    plan = plan_event([E("e1@x.com"), U("u2")], owners, existing, email_first)
    assert (plan.kept, plan.dropped, plan.customers) == ([E("e1@x.com")], [U("u2")], ["X"])


def test_crm_contact_conflicting_with_two_customers_joins_only_the_compatible_one() -> None:
    owners = {E("ada@x.com"): "X", P("+393331234567"): "Y"}
    existing = {
        "X": {"email": {"ada@x.com"}, "crm_id": {"c1"}},
        "Y": {"phone": {"+393331234567"}, "crm_id": {"c2"}},
    }
    plan = plan_event([C("c1"), E("ada@x.com"), P("+393331234567")], owners, existing, POLICY)
    assert plan.kept == [C("c1"), E("ada@x.com")]
    assert plan.dropped == [P("+393331234567")]
    assert plan.customers == ["X"]


def test_customer_already_over_a_limit_keeps_receiving_its_events() -> None:
    # Limits tightened after the fact: X holds two user ids. Its own events must not be
    # dropped, but nothing may add a third.
    owners = {U("u1"): "X", A("a1"): "X"}
    existing = {"X": {"user_id": {"u1", "u2"}, "anonymous_id": {"a1"}}}
    plan = plan_event([U("u1"), A("a1")], owners, existing, POLICY)
    assert (plan.kept, plan.customers) == ([U("u1"), A("a1")], ["X"])
    plan = plan_event([A("a1"), U("u3")], owners, existing, POLICY)
    assert (plan.kept, plan.dropped, plan.customers) == ([U("u3")], [A("a1")], [])


def test_most_important_identifier_is_always_kept() -> None:
    event = [A("a1"), U("u1"), U("u2"), C("c1"), C("c2")]
    plan: Plan[str] = plan_event(event, {}, {}, POLICY)
    assert plan.kept == [A("a1"), U("u1"), C("c1")]
    assert plan.dropped == [U("u2"), C("c2")]


def test_even_inconsistent_inputs_never_drop_the_whole_event() -> None:
    # The caller's snapshot says u1 belongs to X, but X's identities do not list it.
    owners = {U("u1"): "X"}
    plan: Plan[str] = plan_event([U("u1")], owners, {"X": {"user_id": {"u0"}}}, POLICY)
    assert (plan.kept, plan.customers) == ([U("u1")], ["X"])


def test_duplicate_identifiers_in_the_event_count_once() -> None:
    plan: Plan[str] = plan_event([U("u1"), U("u1")], {}, {}, POLICY)
    assert (plan.kept, plan.dropped) == ([U("u1")], [])


# --- reference graph ---------------------------------------------------------------------


def test_anonymous_browsing_then_login_then_crm_contact_is_one_customer() -> None:
    events = [
        [A("a1")],  # browses anonymously
        [A("a1")],
        [U("u1"), A("a1"), E("ada@x.com")],  # signs up
        [C("c1"), E("ada@x.com"), P("+393331234567")],  # CRM pushes the contact
        [A("a2")],  # new phone, still anonymous...
        [U("u1"), A("a2")],  # ...until she logs in
    ]
    assert resolve_sequential(events, POLICY) == [1] * 6


def test_two_users_on_one_shared_device_stay_apart() -> None:
    events = [
        [A("tablet"), U("mario")],
        [A("tablet")],
        [A("tablet"), U("giulia")],
        [U("giulia"), E("giulia@x.com")],
        [A("tablet"), U("mario")],
    ]
    result = resolve_sequential(events, POLICY)
    assert partition(result) == [{0, 1, 4}, {2, 3}]
    graph = ReferenceGraph(POLICY)
    for event in events:
        graph.process(event)
    assert graph.owner(A("tablet")) == graph.owner(U("mario"))


def test_blocked_values_never_merge() -> None:
    config = IdentityConfig()

    def identifiers(user_id: object, anonymous_id: str) -> list[Identifier]:
        extracted = extract_identifiers(
            type="identify",
            user_id=user_id,
            anonymous_id=anonymous_id,
            traits={"email": "test@test.com"},
            context={},
            config=config,
        )
        return extracted.identifiers

    events = [identifiers(v, f"anon-{i}") for i, v in enumerate(["undefined", "null", "0", 0])]
    assert partition(resolve_sequential(events, POLICY)) == [{0}, {1}, {2}, {3}]


def test_merged_ids_resolve_to_the_oldest_survivor() -> None:
    graph = ReferenceGraph(POLICY)
    assert graph.process([A("a1")]) == 1
    assert graph.process([A("a2")]) == 2
    assert graph.process([A("a2"), E("ada@x.com")]) == 2
    assert graph.process([A("a1"), E("ada@x.com")]) == 1
    assert graph.resolve(2) == 1
    assert graph.customers() == {1: {"anonymous_id": {"a1", "a2"}, "email": {"ada@x.com"}}}


def test_event_without_identifiers_gets_its_own_customer() -> None:
    assert partition(resolve_sequential([[], [], [A("a")]], POLICY)) == [{0}, {1}, {2}]


# --- properties ------------------------------------------------------------------------------

KINDS = ["user_id", "crm_id", "email", "phone", "anonymous_id", "card"]
identifiers = st.builds(ident, st.sampled_from(KINDS), st.sampled_from(["1", "2", "3", "4"]))
events = st.lists(st.lists(identifiers, max_size=4), max_size=25)


@settings(max_examples=300, deadline=None)
@given(events)
def test_no_customer_ever_breaks_a_limit(events: list[list[Identifier]]) -> None:
    graph = ReferenceGraph(POLICY)
    for event in events:
        graph.process(event)
        for identities in graph.customers().values():
            assert violates_limits(identities, POLICY) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.lists(identifiers, max_size=3))))
def test_different_user_ids_never_share_a_customer(
    logged_in: list[tuple[str, list[Identifier]]],
) -> None:
    events = [[U(user), *(i for i in rest if i.kind != "user_id")] for user, rest in logged_in]
    result = resolve_sequential(events, POLICY)
    user_of: dict[int, str] = {}
    for (user, _), customer in zip(logged_in, result, strict=True):
        assert user_of.setdefault(customer, user) == user


@settings(max_examples=200, deadline=None)
@given(events)
def test_processing_is_deterministic_and_merged_ids_resolve(
    events: list[list[Identifier]],
) -> None:
    first = resolve_sequential(events, POLICY)
    assert resolve_sequential(events, POLICY) == first
    graph = ReferenceGraph(POLICY)
    for event in events:
        graph.process(event)
    survivors = set(graph.customers())
    assert set(first) <= survivors
    for identifier in {i for event in events for i in event}:
        owner = graph.owner(identifier)
        assert owner is None or owner in survivors


@settings(max_examples=200, deadline=None)
@given(events)
def test_without_limits_customers_are_connected_components(
    events: list[list[Identifier]],
) -> None:
    parent = list(range(len(events)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    first_event: dict[Identifier, int] = {}
    for n, event in enumerate(events):
        for identifier in event:
            if identifier in first_event:
                parent[find(n)] = find(first_event[identifier])
            else:
                first_event[identifier] = n
    expected = [find(n) for n in range(len(events))]
    result = resolve_sequential(events, MergePolicy(limits={}))
    assert partition(result) == partition(expected)
