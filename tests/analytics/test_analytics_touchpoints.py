"""GET /v1/analytics/touchpoints: events by channel and stage in a window."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx

from app.models import CHANNELS
from tests.analytics.people import get, machine, page, refused
from tests.factories import T0, touchpoint

WINDOW = {"since": T0.isoformat(), "until": (T0 + timedelta(seconds=100)).isoformat()}


async def _touches(handle: Any, source_id: uuid.UUID) -> None:
    """Seconds after T0: ada's home page (web, awareness) 0, email link click (interest) 10,
    product view (web, consideration) 20, email open 30, a proxy's open 40; bob's social
    page 50 (awareness) and follow 60 (interest); an anonymous product view 5
    (consideration) merged with cy's home page 15 by her page at 70, which rewrites that
    page's stage to consideration; dan's product view at the window's end (100) and his
    page at 90, stored late (awareness)."""
    await handle(
        [
            page(source_id, 0, user_id="ada"),
            touchpoint(
                source_id, user_id="ada", event="Email Link Clicked", channel="email", at=10
            ),
            touchpoint(source_id, user_id="ada", event="Product Viewed", at=20),
            touchpoint(source_id, user_id="ada", event="Email Opened", channel="email", at=30),
            machine(
                touchpoint(source_id, user_id="ada", event="Email Opened", channel="email", at=40)
            ),
            touchpoint(
                source_id, user_id="bob", type="page", event="Home", channel="social", at=50
            ),
            touchpoint(source_id, user_id="bob", event="Followed", channel="social", at=60),
            touchpoint(source_id, anonymous_id="anon-t", event="Product Viewed", at=5),
            page(source_id, 15, user_id="cy"),
            touchpoint(source_id, user_id="dan", event="Product Viewed", at=100),
        ]
    )
    await handle(
        [
            page(source_id, 70, user_id="cy", anonymous_id="anon-t"),
            page(source_id, 90, user_id="dan"),
        ]
    )


def _cells(body: dict[str, Any]) -> dict[tuple[str, str | None], tuple[int, int]]:
    """The non-empty cells, as (events, customers)."""
    return {
        (c["channel"], c["stage"]): (c["events"], c["customers"])
        for c in body["cells"]
        if c["events"]
    }


async def test_the_matrix_counts_events_and_customers_by_channel_and_stage(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _touches(handle, source_id)

    body = await get(app_client, read_token, "touchpoints", **WINDOW)

    assert body["channels"] == list(CHANNELS)
    assert body["stages"] == [
        "awareness",
        "interest",
        "consideration",
        "purchase",
        "use",
        "loyalty",
        "advocacy",
    ]
    assert len(body["cells"]) == len(CHANNELS) * 7  # zeros included
    assert _cells(body) == {
        ("web", "awareness"): (2, 2),  # ada's and dan's (late) pages
        ("web", "consideration"): (4, 2),  # ada's view; the merged customer's three
        ("email", "interest"): (1, 1),
        ("email", "consideration"): (1, 1),  # the proxy's open left out
        ("social", "awareness"): (1, 1),
        ("social", "interest"): (1, 1),
    }
    by_channel = {c["channel"]: (c["events"], c["customers"]) for c in body["by_channel"]}
    assert by_channel["web"] == (6, 3)  # ada, the merged customer, dan
    assert by_channel["email"] == (2, 1)
    assert by_channel["ads"] == (0, 0)
    by_stage = {s["stage"]: (s["events"], s["customers"]) for s in body["by_stage"]}
    assert by_stage["awareness"] == (3, 3)
    assert by_stage["consideration"] == (5, 2)
    assert body["total"] == {"events": 10, "customers": 4}


async def test_filters_by_type_and_event_and_machine_activity_on_request(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _touches(handle, source_id)

    pages = await get(app_client, read_token, "touchpoints", **WINDOW, type="page")
    named = await get(
        app_client, read_token, "touchpoints", **WINDOW, event=["Product Viewed", "Followed"]
    )
    machines = await get(app_client, read_token, "touchpoints", **WINDOW, include_machine="true")

    assert _cells(pages) == {
        ("web", "awareness"): (2, 2),
        ("web", "consideration"): (2, 1),
        ("social", "awareness"): (1, 1),
    }
    assert _cells(named) == {("web", "consideration"): (2, 2), ("social", "interest"): (1, 1)}
    assert _cells(machines)[("email", "consideration")] == (2, 1)
    assert machines["total"] == {"events": 11, "customers": 4}


async def test_events_without_a_stage_get_a_column_of_their_own(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    # A proxy's open before the person did anything: no stage yet.
    await handle(
        [machine(touchpoint(source_id, user_id="eve", event="Email Opened", channel="email"))]
    )

    body = await get(app_client, read_token, "touchpoints", **WINDOW, include_machine="true")

    assert body["stages"][-1] is None
    assert _cells(body) == {("email", None): (1, 1)}
    assert body["by_stage"][-1] == {"stage": None, "events": 1, "customers": 1}


async def test_bad_filters_and_windows_are_422_problems(
    app_client: httpx.AsyncClient, read_token: str
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "click"}, "query.type.0"),
        ({"event": [f"e{i}" for i in range(21)]}, "query.event"),
        ({"event": "a\x00b"}, "query.event.0"),
        ({"include_machine": "maybe"}, "query.include_machine"),
        ({"until": (T0 - timedelta(seconds=1)).isoformat()}, "query.until"),
        ({"until": (T0 + timedelta(days=367)).isoformat()}, "query.until"),
    ]
    for params, field in cases:
        errors = await refused(app_client, read_token, "touchpoints", **{**WINDOW, **params})
        assert field in errors, (params, errors)
    assert "query.until" in await refused(
        app_client, read_token, "touchpoints", since=T0.isoformat()
    )
