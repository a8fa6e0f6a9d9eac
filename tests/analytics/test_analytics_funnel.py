"""GET /v1/analytics/funnel: step counts, conversions and times between stages."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx

from tests.analytics.people import get, page, refused
from tests.factories import T0, touchpoint

WINDOW = {"since": T0.isoformat(), "until": (T0 + timedelta(seconds=1000)).isoformat()}


async def _journeys(handle: Any, source_id: uuid.UUID) -> None:
    """Seconds after T0: ada 0 awareness, 100 interest, 400 consideration, 1000 purchase;
    bob 50 awareness, 250 consideration (skips interest); cy 60 awareness, 120 interest,
    180 consideration, back to interest at 240, consideration again at 300, purchase at 900;
    eve 30 awareness, and an anonymous visitor 70 interest merged into her by a product
    view at 130 (consideration); frank 200 awareness, 500 consideration, and a late sign-up
    at 300 (interest) stored after; dan entered awareness a day early, gus at the window's
    end."""

    def track(event: str, at: int, **ids: Any) -> Any:
        return touchpoint(source_id, event=event, at=at, **ids)

    await handle(
        [
            page(source_id, 0, user_id="ada"),
            track("Signed Up", 100, user_id="ada"),
            track("Product Viewed", 400, user_id="ada"),
            track("Order Completed", 1000, user_id="ada"),
            page(source_id, 50, user_id="bob"),
            track("Product Viewed", 250, user_id="bob"),
            page(source_id, 60, user_id="cy"),
            track("Signed Up", 120, user_id="cy"),
            track("Product Viewed", 180, user_id="cy"),
            track("Newsletter Subscribed", 240, user_id="cy"),
            track("Product Viewed", 300, user_id="cy"),
            track("Order Completed", 900, user_id="cy"),
            page(source_id, 30, user_id="eve"),
            track("Signed Up", 70, anonymous_id="anon-m"),
            page(source_id, 200, user_id="frank"),
            track("Product Viewed", 500, user_id="frank"),
            page(source_id, T0 - timedelta(days=1), user_id="dan"),
            track("Signed Up", 10, user_id="dan"),
            page(source_id, 1000, user_id="gus"),
        ]
    )
    await handle(
        [
            track("Product Viewed", 130, user_id="eve", anonymous_id="anon-m"),
            track("Signed Up", 300, user_id="frank"),  # late
        ]
    )


def _steps(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (
            s["stage"],
            s["customers"],
            s["conversion_from_previous"],
            s["conversion_from_first"],
            s["median_seconds_from_previous"],
            s["p90_seconds_from_previous"],
        )
        for s in body["steps"]
    ]


async def test_the_models_funnel_counts_each_customer_once_in_journey_order(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _journeys(handle, source_id)

    body = await get(app_client, read_token, "funnel", **WINDOW)

    assert body["model"] == "default"
    assert body["within_seconds"] is None
    # awareness: ada, bob, cy, eve (once, merged), frank; not dan (before the window) nor
    # gus (at its end). interest after awareness: ada +100, cy +60, eve +40, frank +100
    # (his late sign-up); bob skipped it. consideration after interest: ada +300, cy +60
    # (her first after interest), eve +60, frank +200. purchase: ada +600, cy +720.
    assert _steps(body) == [
        ("awareness", 5, None, 1.0, None, None),
        ("interest", 4, 0.8, 0.8, 80.0, 100.0),
        ("consideration", 4, 1.0, 0.8, 130.0, 270.0),
        ("purchase", 2, 0.5, 0.4, 660.0, 708.0),
        ("use", 0, 0.0, 0.0, None, None),
        ("loyalty", 0, 0.0, 0.0, None, None),
        ("advocacy", 0, 0.0, 0.0, None, None),
    ]


async def test_a_conversion_window_counts_from_the_first_step_and_includes_its_end(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _journeys(handle, source_id)
    steps = {"stages": ["awareness", "purchase"]}

    # cy purchased 840 s after her awareness, ada 1,000 s after hers.
    exact = await get(app_client, read_token, "funnel", **WINDOW, **steps, within="840")
    shorter = await get(app_client, read_token, "funnel", **WINDOW, **steps, within="PT13M59S")
    unlimited = await get(app_client, read_token, "funnel", **WINDOW, **steps)

    assert exact["within_seconds"] == 840.0
    assert [s["customers"] for s in exact["steps"]] == [5, 1]
    assert exact["steps"][1]["median_seconds_from_previous"] == 840.0
    assert [s["customers"] for s in shorter["steps"]] == [5, 0]
    assert [s["customers"] for s in unlimited["steps"]] == [5, 2]


async def test_chosen_steps_count_customers_who_skipped_the_stages_between(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _journeys(handle, source_id)

    body = await get(
        app_client, read_token, "funnel", **WINDOW, stages=["awareness", "consideration"]
    )

    # bob skipped interest: he counts here.
    assert [(s["stage"], s["customers"]) for s in body["steps"]] == [
        ("awareness", 5),
        ("consideration", 5),
    ]
    # Gaps: eve 100, cy 120, bob 200, ada 400, frank 300.
    assert body["steps"][1]["median_seconds_from_previous"] == 200.0


async def test_the_window_is_on_the_first_entry_into_the_first_step(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _journeys(handle, source_id)

    # cy entered interest at 120 and again at 240: she starts this funnel at 120 only.
    late = await get(
        app_client,
        read_token,
        "funnel",
        since=(T0 + timedelta(seconds=121)).isoformat(),
        until=WINDOW["until"],
        stages=["interest", "consideration"],
    )
    # dan's first interest (10 s) is in the window though his awareness was not.
    early = await get(
        app_client,
        read_token,
        "funnel",
        since=T0.isoformat(),
        until=(T0 + timedelta(seconds=100)).isoformat(),
        stages=["interest", "consideration"],
    )

    assert [s["customers"] for s in late["steps"]] == [1, 1]  # frank (300 → 500)
    assert [s["customers"] for s in early["steps"]] == [2, 1]  # dan, eve (70 → 130)


async def test_bad_steps_windows_and_durations_are_422_problems(
    app_client: httpx.AsyncClient, read_token: str
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"stages": ["awareness", "vip"]}, "query.stages"),
        ({"stages": ["purchase", "awareness"]}, "query.stages"),
        ({"stages": ["purchase", "purchase"]}, "query.stages"),
        ({"stages": ["purchase"]}, "query.stages"),
        ({"stages": ["a"] * 21}, "query.stages"),
        ({"until": WINDOW["since"]}, "query.until"),
        ({"until": (T0 + timedelta(days=366, seconds=1)).isoformat()}, "query.until"),
        ({"within": "0"}, "query.within"),
        ({"within": "P367D"}, "query.within"),
        ({"within": "soon"}, "query.within"),
        ({"since": "last week"}, "query.since"),
    ]
    for params, field in cases:
        errors = await refused(app_client, read_token, "funnel", **{**WINDOW, **params})
        assert field in errors, (params, errors)
    assert "query.since" in await refused(app_client, read_token, "funnel", until=T0.isoformat())
    longest = {"until": (T0 + timedelta(days=366)).isoformat()}
    assert (await get(app_client, read_token, "funnel", **{**WINDOW, **longest}))["steps"]
