"""GET /v1/analytics/abandoned-carts: carts left without an order, newest first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.analytics.people import get, page, refused
from tests.factories import T0, touchpoint
from tests.helpers import bearer, scalar

HOUR = 3600
AS_OF = {"since": T0.isoformat(), "as_of": (T0 + timedelta(hours=10)).isoformat()}


async def _carts(handle: Any, source_id: uuid.UUID, db: AsyncEngine) -> list[str]:
    """Hours after T0, looked at from 10 h. ada adds two of a product (1 h), starts checkout
    (2 h): abandoned. bob adds (3 h) and orders (4 h). cy ordered (1 h), then adds (5 h):
    abandoned. dan viewed his cart (2.5 h) and adds at 9.5 h: not idle for an hour yet.
    An anonymous shopper adds (6 h) and is merged into eve by her page at 7 h. frank views
    his cart (8 h) and orders at 12 h, after `as_of`. gus's cart is older than `since`. hal
    adds (3 h) and orders at 4 h, an order stored late. Returns the (surviving) customer ids
    of ada, cy, eve and frank."""

    def track(event: str, hours: float, properties: Any = None, **ids: Any) -> Any:
        at = T0 + timedelta(hours=hours)
        return touchpoint(source_id, event=event, at=at, properties=properties, **ids)

    added = {"sku": "P-1", "price": 10, "quantity": 2, "currency": "EUR"}
    checkout = {
        "value": 30,
        "currency": "EUR",
        "products": [{"sku": "P-1", "quantity": 2}, {"sku": "P-2", "quantity": 1}],
    }
    await handle(
        [
            track("Product Added", 1, added, user_id="ada"),
            track("Checkout Started", 2, checkout, user_id="ada"),
            track("Product Added", 3, user_id="bob"),
            track("Order Completed", 4, user_id="bob"),
            track("Order Completed", 1, user_id="cy"),
            track("Product Added", 5, {"sku": "P-3", "price": 5}, user_id="cy"),
            track("Cart Viewed", 2.5, user_id="dan"),
            track("Product Added", 9.5, user_id="dan"),
            track("Product Added", 6, {"sku": "P-4"}, anonymous_id="anon-c"),
            page(source_id, 0, user_id="eve"),
            track("Cart Viewed", 8, user_id="frank"),
            track("Order Completed", 12, user_id="frank"),
            track("Product Added", -1 / 60, user_id="gus"),
            track("Product Added", 3, user_id="hal"),
        ]
    )
    await handle(
        [
            page(source_id, T0 + timedelta(hours=7), user_id="eve", anonymous_id="anon-c"),
            track("Order Completed", 4, user_id="hal"),  # late
        ]
    )
    return [await _owner(db, user) for user in ("ada", "cy", "eve", "frank")]


async def _owner(db: AsyncEngine, user_id: str) -> str:
    """The (surviving) customer of a user id: a merge moves identities to the survivor."""
    found = await scalar(
        db,
        "SELECT customer_id FROM identities WHERE kind = 'user_id' AND value = :value",
        {"value": user_id},
    )
    return str(found)


def _items(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(item["customer_id"], item["event"]) for item in body["items"]]


async def test_carts_left_without_an_order_newest_first_one_per_customer(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    ada, cy, eve, frank = await _carts(handle, source_id, db)

    body = await get(app_client, read_token, "abandoned-carts", **AS_OF)

    assert body["idle_seconds"] == 3600.0
    assert _items(body) == [
        (frank, "Cart Viewed"),  # his order came after `as_of`
        (eve, "Product Added"),  # the anonymous shopper's cart, as the survivor's
        (cy, "Product Added"),  # an order before the cart does not close it
        (ada, "Checkout Started"),  # her latest cart event only
    ]
    assert body["next_cursor"] is None
    checkout = body["items"][3]
    assert checkout["occurred_at"].startswith("2026-11-01T11:00:00")
    assert (checkout["value"], checkout["currency"]) == (30.0, "EUR")
    assert [p["sku"] for p in checkout["products"]] == ["P-1", "P-2"]
    added = body["items"][2]
    assert added["products"] == [{"sku": "P-3", "price": 5}]
    assert (added["value"], added["currency"]) == (5.0, None)
    assert body["items"][1]["value"] is None


async def test_pages_follow_the_cursor_and_the_idle_cutoff_and_since_are_edges(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    ada, cy, eve, frank = await _carts(handle, source_id, db)

    first = await get(app_client, read_token, "abandoned-carts", **AS_OF, limit=2)
    second = await get(
        app_client, read_token, "abandoned-carts", **AS_OF, limit=2, cursor=first["next_cursor"]
    )
    # Idle 4 h: the cutoff is 6 h, and eve's cart at 6 h is not idle long enough.
    four_hours = await get(app_client, read_token, "abandoned-carts", **AS_OF, idle="PT4H")
    from_checkout = {**AS_OF, "since": (T0 + timedelta(hours=2)).isoformat()}
    at_since = await get(app_client, read_token, "abandoned-carts", **from_checkout)
    after_since = {**AS_OF, "since": (T0 + timedelta(hours=2, seconds=1)).isoformat()}
    later = await get(app_client, read_token, "abandoned-carts", **after_since)

    assert [c for c, _ in _items(first)] == [frank, eve]
    assert [c for c, _ in _items(second)] == [cy, ada]
    assert second["next_cursor"] is None
    assert [c for c, _ in _items(four_hours)] == [cy, ada]
    assert [c for c, _ in _items(at_since)][-1] == ada
    assert ada not in [c for c, _ in _items(later)]


async def test_bad_durations_windows_limits_and_cursors_are_client_errors(
    app_client: httpx.AsyncClient, read_token: str
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"idle": "PT30S"}, "query.idle"),
        ({"idle": "P31D"}, "query.idle"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": "201"}, "query.limit"),
        ({"since": AS_OF["as_of"]}, "query.since"),
        ({"since": (T0 - timedelta(days=366)).isoformat()}, "query.since"),  # 366 d 10 h
        ({"as_of": "tomorrow"}, "query.as_of"),
    ]
    for params, field in cases:
        errors = await refused(app_client, read_token, "abandoned-carts", **{**AS_OF, **params})
        assert field in errors, (params, errors)
    bad = await app_client.get(
        "/v1/analytics/abandoned-carts",
        params={**AS_OF, "cursor": "not-a-cursor"},
        headers=bearer(read_token),
    )
    assert bad.status_code == 400
    assert bad.json()["type"].endswith("/invalid-request")
    # Without `since`: the 30 days before `as_of`; without `as_of`: now.
    month = await get(app_client, read_token, "abandoned-carts", as_of=AS_OF["as_of"])
    assert month["since"] == "2026-10-02T19:00:00Z"
    now = await get(app_client, read_token, "abandoned-carts")
    as_of = datetime.fromisoformat(now["as_of"])
    assert abs(datetime.now(UTC) - as_of) < timedelta(minutes=1)
    assert as_of - datetime.fromisoformat(now["since"]) == timedelta(days=30)


async def test_an_as_of_too_early_to_look_back_from_is_a_422_not_a_crash(
    app_client: httpx.AsyncClient, read_token: str
) -> None:
    # 30 days (the default `since`) or `idle` before these fall before year 1, which the
    # API computed in Python and failed on with a 500.
    start = "0001-01-01T00:00:00Z"
    cases = [
        {"as_of": start},
        {"as_of": "0001-01-10T00:00:00Z", "since": start, "idle": "P30D"},
    ]
    for params in cases:
        errors = await refused(app_client, read_token, "abandoned-carts", **params)
        assert "query.as_of" in errors, (params, errors)
    later = {"as_of": "0001-01-02T00:00:00Z", "since": start}
    assert (await get(app_client, read_token, "abandoned-carts", **later))["items"] == []
