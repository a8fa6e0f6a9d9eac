"""GET /v1/analytics/attribution: conversions credited to their touchpoints."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.analytics.people import campaign, get, machine, page, refused
from tests.factories import T0, touchpoint

WINDOW = {"since": T0.isoformat(), "until": (T0 + timedelta(days=1)).isoformat()}


async def _conversions(handle: Any, source_id: uuid.UUID) -> None:
    """Seconds after T0. ada: an ad click 0 (google/cpc/spring), an email click 3600
    (newsletter/email/spring), a web page 7200, an identify call 7300 (no touchpoint), a
    proxy's email open 9000, her order 10800. bob orders at 100 with nothing before. An
    anonymous social like 200 (facebook) and cy's page 300 are merged by her order at 400.
    eve: an email page 500, her order 4100. Outside the window: dan's order an hour before
    it, gus's at its end."""

    def track(event: str, at: int | Any, channel: str = "web", **ids: Any) -> Any:
        return touchpoint(source_id, event=event, at=at, channel=channel, **ids)

    await handle(
        [
            campaign(track("Ad Clicked", 0, "ads", user_id="ada"), "google", "cpc", "spring"),
            campaign(
                track("Email Link Clicked", 3600, "email", user_id="ada"),
                "newsletter",
                "email",
                "spring",
            ),
            page(source_id, 7200, user_id="ada"),
            touchpoint(source_id, user_id="ada", type="identify", event=None, at=7300),
            machine(track("Email Opened", 9000, "email", user_id="ada")),
            track("Order Completed", 10800, user_id="ada"),
            track("Order Completed", 100, user_id="bob"),
            campaign(
                track("Post Liked", 200, "social", anonymous_id="anon-a"),
                "facebook",
                "social",
                "fall",
            ),
            page(source_id, 300, user_id="cy"),
            touchpoint(
                source_id, user_id="eve", type="page", event="Home", channel="email", at=500
            ),
            track("Order Completed", 4100, user_id="eve"),
            page(source_id, T0 - timedelta(days=2), user_id="dan"),
            track("Order Completed", T0 - timedelta(hours=1), user_id="dan"),
            page(source_id, 50, user_id="gus"),
            track("Order Completed", T0 + timedelta(days=1), user_id="gus"),
        ]
    )
    await handle([track("Order Completed", 400, user_id="cy", anonymous_id="anon-a")])


def _credits(body: dict[str, Any]) -> dict[str, float]:
    return {v["value"]: v["credit"] for v in body["values"]}


async def test_each_model_credits_the_converting_customers_touchpoints(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _conversions(handle, source_id)

    async def run(model: str, **params: Any) -> dict[str, Any]:
        return dict(
            await get(app_client, read_token, "attribution", **WINDOW, model=model, **params)
        )

    last = await run("last")
    assert (last["stage"], last["event"], last["dimension"]) == ("purchase", None, "channel")
    # ada, bob, cy (once, merged) and eve; bob had no touchpoint before his order.
    assert (last["conversions"], last["attributed"], last["unattributed"]) == (4, 3, 1)
    assert last["values"] == [
        {"value": "web", "credit": 2.0, "touchpoints": 2},  # ada's page, cy's page
        {"value": "email", "credit": 1.0, "touchpoints": 2},  # eve's page
        {"value": "ads", "credit": 0.0, "touchpoints": 1},
        {"value": "social", "credit": 0.0, "touchpoints": 1},
    ]
    assert last["other"] == {"values": 0, "credit": 0.0, "touchpoints": 0}
    assert last["lookback_seconds"] == 30 * 86400
    assert last["half_life_seconds"] is None

    first = await run("first")
    assert _credits(first) == {"ads": 1.0, "email": 1.0, "social": 1.0, "web": 0.0}

    linear = await run("linear")
    assert _credits(linear) == {
        "email": 1.333333,  # ada's third, eve's whole
        "web": 0.833333,  # ada's third, cy's half
        "social": 0.5,
        "ads": 0.333333,
    }

    decay = await run("time_decay", half_life="PT1H")
    assert decay["half_life_seconds"] == 3600.0
    # ada's touches 3 h, 2 h and 1 h before her order weigh 1/4, 1/2 and 1; cy's social
    # like is 100 s older than her page: 0.5 ** (100 / 3600) against 1.
    like = 0.5 ** (100 / 3600)
    assert _credits(decay) == pytest.approx(
        {
            "email": 0.5 / 1.75 + 1,
            "web": 1 / 1.75 + 1 / (1 + like),
            "social": like / (1 + like),
            "ads": 0.25 / 1.75,
        },
        abs=1e-6,
    )
    for body in (first, linear, decay):
        assert sum(_credits(body).values()) == pytest.approx(3)


async def test_campaign_dimensions_count_only_touchpoints_that_carry_them(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _conversions(handle, source_id)

    sources = await get(
        app_client, read_token, "attribution", **WINDOW, model="linear", dimension="campaign.source"
    )
    names = await get(
        app_client, read_token, "attribution", **WINDOW, model="first", dimension="campaign.name"
    )

    assert (sources["attributed"], sources["unattributed"]) == (2, 2)  # bob, eve: no utm
    assert _credits(sources) == {"facebook": 1.0, "google": 0.5, "newsletter": 0.5}
    assert [(v["value"], v["credit"], v["touchpoints"]) for v in names["values"]] == [
        ("fall", 1.0, 1),
        ("spring", 1.0, 2),
    ]


async def test_an_event_as_the_conversion_machine_activity_and_the_lookback_edge(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _conversions(handle, source_id)

    clicks = await get(app_client, read_token, "attribution", **WINDOW, event="Email Link Clicked")
    with_machines = await get(
        app_client, read_token, "attribution", **WINDOW, include_machine="true"
    )
    # eve's page and ada's are exactly an hour before their orders: in a lookback of an
    # hour, not in one of 3599 s (which leaves cy's alone).
    hour = await get(app_client, read_token, "attribution", **WINDOW, lookback="PT1H")
    shorter = await get(app_client, read_token, "attribution", **WINDOW, lookback="3599")

    assert (clicks["stage"], clicks["event"], clicks["conversions"]) == (
        None,
        "Email Link Clicked",
        1,
    )
    assert _credits(clicks) == {"ads": 1.0}  # not the click itself
    # The proxy's open (9000) is then ada's last touch before her order.
    assert _credits(with_machines) == {"email": 2.0, "web": 1.0, "ads": 0.0, "social": 0.0}
    assert _credits(hour) == {"web": 2.0, "email": 1.0, "social": 0.0}
    assert (hour["attributed"], hour["unattributed"]) == (3, 1)
    assert _credits(shorter) == {"web": 1.0, "social": 0.0}
    assert (shorter["attributed"], shorter["unattributed"]) == (1, 3)


async def test_values_beyond_the_limit_are_summed_as_other(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _conversions(handle, source_id)

    body = await get(app_client, read_token, "attribution", **WINDOW, model="linear", limit="1")

    assert body["values"] == [{"value": "email", "credit": 1.333333, "touchpoints": 2}]
    assert body["other"] == {"values": 3, "credit": 1.666667, "touchpoints": 4}


async def test_bad_models_dimensions_stages_and_durations_are_422_problems(
    app_client: httpx.AsyncClient, read_token: str
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "shapley"}, "query.model"),
        ({"dimension": "utm_source"}, "query.dimension"),
        ({"stage": "vip"}, "query.stage"),
        ({"stage": "purchase", "event": "Order Completed"}, "query.event"),
        ({"lookback": "P91D"}, "query.lookback"),
        ({"lookback": "0"}, "query.lookback"),
        ({"half_life": "PT30S"}, "query.half_life"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": "501"}, "query.limit"),
        ({"until": (T0 + timedelta(days=400)).isoformat()}, "query.until"),
    ]
    for params, field in cases:
        errors = await refused(app_client, read_token, "attribution", **{**WINDOW, **params})
        assert field in errors, (params, errors)


async def test_a_campaign_value_is_a_string_or_a_number_not_blank(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    # Each customer's ad click carries one `context.campaign.source`, then they order.
    sources: list[Any] = ["google", 123, 1.5, {"id": 5}, ["x"], True, None, "", "  "]
    calls = []
    for n, value in enumerate(sources):
        click = touchpoint(source_id, event="Ad Clicked", at=10, user_id=f"u{n}")
        click.context = {**click.context, "campaign": {"source": value}}
        calls += [click, touchpoint(source_id, event="Order Completed", at=20, user_id=f"u{n}")]
    await handle(calls)

    body = await get(app_client, read_token, "attribution", **WINDOW, dimension="campaign.source")

    # An object, a list or a boolean is no campaign, any more than null or a blank string.
    assert _credits(body) == {"1.5": 1.0, "123": 1.0, "google": 1.0}
    assert (body["conversions"], body["attributed"], body["unattributed"]) == (9, 3, 6)


async def test_percorsos_own_email_clicks_count_for_their_campaign_name(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    # What /v1/email/click records for a link minted with `--campaign spring`: the campaign
    # in the properties, no `context.campaign`.
    click = touchpoint(
        source_id,
        event="Email Link Clicked",
        channel="email",
        at=10,
        user_id="ada",
        properties={"campaign": "spring", "url": "https://shop.example/spring"},
    )
    # Another tool's event that happens to have a `campaign` property is not one of them.
    other = touchpoint(source_id, event="Coupon Seen", at=10, user_id="bob")
    other.properties = {"campaign": "autumn"}
    await handle(
        [
            click,
            touchpoint(source_id, event="Order Completed", at=20, user_id="ada"),
            other,
            touchpoint(source_id, event="Order Completed", at=20, user_id="bob"),
        ]
    )

    body = await get(app_client, read_token, "attribution", **WINDOW, dimension="campaign.name")

    assert _credits(body) == {"spring": 1.0}
    assert (body["attributed"], body["unattributed"]) == (1, 1)


async def test_a_touchpoint_counts_for_each_conversion_after_it_as_does_an_earlier_order(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    # ada: a social post (0), an order on the web (100), a second order in store (200).
    await handle(
        [
            touchpoint(source_id, event="Post Liked", channel="social", at=0, user_id="ada"),
            touchpoint(source_id, event="Order Completed", at=100, user_id="ada"),
            touchpoint(
                source_id, event="Order Completed", channel="in_store", at=200, user_id="ada"
            ),
        ]
    )
    orders = {**WINDOW, "event": "Order Completed", "model": "linear"}

    body = await get(app_client, read_token, "attribution", **orders)

    # The first order: the post's. The second: the post and the first order, half each.
    assert (body["conversions"], body["attributed"]) == (2, 2)
    assert [(v["value"], v["credit"], v["touchpoints"]) for v in body["values"]] == [
        ("social", 1.5, 2),
        ("web", 0.5, 1),
    ]
