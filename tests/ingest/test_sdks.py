"""The official Segment and RudderStack server libraries, pointed at Percorso, end to end:
their events appear in the timeline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from app.pipeline.runner import Pipeline
from tests.helpers import bearer, wait_until
from tests.ingest.fixtures import SourceFactory

pytestmark = pytest.mark.pipeline


async def _profile(client: httpx.AsyncClient, token: str, user_id: str) -> httpx.Response:
    return await client.get(
        "/v1/customers/lookup", params={"kind": "user_id", "value": user_id}, headers=bearer(token)
    )


async def _timeline(client: httpx.AsyncClient, token: str, user_id: str) -> list[dict[str, Any]]:
    found = await _profile(client, token, user_id)
    if found.status_code == 404:
        return []
    page = await client.get(f"/v1/customers/{found.json()['id']}/timeline", headers=bearer(token))
    items: list[dict[str, Any]] = page.json()["items"]
    return items


def _screen(items: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The screen call's name and properties, as _drive sent it: screen(user, "App", "Cart")."""
    screen = next(i for i in items if i["type"] == "screen")
    return screen["event"], screen["properties"]


def _drive(client: Any, user: str) -> None:
    """The same calls through either library (their signatures match)."""
    client.identify(user, {"email": f"{user}@example.com", "name": "Ada"})
    client.page(user, "Docs", "Home", {"path": "/"})
    client.screen(user, "App", "Cart")
    client.group(user, "acme", {"name": "Acme"})
    client.track(user, "Order Completed", {"revenue": 30, "currency": "EUR"})
    client.alias(f"anon-of-{user}", user)
    client.flush()


async def _send_and_find(
    make_client: Callable[[list[Any]], Any],
    user: str,
    app_client: httpx.AsyncClient,
    read_token: str,
) -> list[dict[str, Any]]:
    def send() -> list[Any]:
        errors: list[Any] = []
        client = make_client(errors)
        _drive(client, user)
        client.shutdown()
        return errors

    assert await asyncio.to_thread(send) == []

    async def all_six() -> list[dict[str, Any]] | None:
        items = await _timeline(app_client, read_token, user)
        return items if len(items) >= 6 else None

    return await wait_until(all_six)  # type: ignore[no-any-return]


async def test_segment_analytics_python_events_reach_the_timeline(
    http_base_url: str,
    make_source: SourceFactory,
    app_client: httpx.AsyncClient,
    read_token: str,
    pipeline: Pipeline,
) -> None:
    from segment.analytics import Client

    _, key = await make_source(name="segment-python")

    def make(errors: list[Any]) -> Any:
        return Client(
            write_key=key,
            host=http_base_url,
            gzip=True,
            max_retries=1,
            on_error=lambda error, batch: errors.append(error),
        )

    items = await _send_and_find(make, "seg-ada", app_client, read_token)
    assert sorted(i["type"] for i in items) == sorted(
        ["identify", "page", "screen", "group", "track", "alias"]
    )
    order = next(i for i in items if i["event"] == "Order Completed")
    assert order["properties"] == {"revenue": 30, "currency": "EUR"}
    assert order["channel"] == "web"
    assert order["context"]["library"]["name"] == "analytics-python"
    assert _screen(items) == ("Cart", {"category": "App"})
    profile = (await _profile(app_client, read_token, "seg-ada")).json()
    assert profile["traits"] == {"email": "seg-ada@example.com", "name": "Ada"}


async def test_rudder_sdk_python_events_reach_the_timeline(
    http_base_url: str,
    make_source: SourceFactory,
    app_client: httpx.AsyncClient,
    read_token: str,
    pipeline: Pipeline,
) -> None:
    from rudderstack.analytics.client import Client

    _, key = await make_source(name="rudder-python", channel="crm")

    def make(errors: list[Any]) -> Any:
        return Client(
            write_key=key,
            host=http_base_url,
            max_retries=1,
            on_error=lambda error, batch: errors.append(error),
        )

    items = await _send_and_find(make, "rudder-ada", app_client, read_token)
    assert sorted(i["type"] for i in items) == sorted(
        ["identify", "page", "screen", "group", "track", "alias"]
    )
    assert all(i["channel"] == "crm" for i in items)
    page = next(i for i in items if i["type"] == "page")
    assert page["event"] == "Home"
    assert _screen(items) == ("Cart", {"category": "App"})
    # The library sends identify's traits in context.traits alone, as RudderStack's SDKs do.
    profile = (await _profile(app_client, read_token, "rudder-ada")).json()
    assert profile["traits"] == {"email": "rudder-ada@example.com", "name": "Ada"}


def _cart(products: int) -> list[dict[str, Any]]:
    return [
        {
            "product_id": f"P-{n:05d}",
            "sku": f"SKU-{n:05d}",
            "name": f"Espresso cup no. {n}",
            "price": 12.5,
            "quantity": 1,
            "category": "Kitchen",
        }
        for n in range(products)
    ]


async def _rudder_batch(
    http_base_url: str,
    key: str,
    app_client: httpx.AsyncClient,
    read_token: str,
    user: str,
    calls: list[dict[str, Any]],
    upload_size: int = 100,
) -> dict[str, Any]:
    """Send ``calls`` (track properties) as one user through rudder-sdk-python, its batch
    limits as given, and wait for them all to be stored: the user's profile."""
    from rudderstack.analytics.client import Client

    def send() -> list[Any]:
        errors: list[Any] = []
        # The batch closes at upload_size calls or at the SDK's 4 MiB, not the interval's
        # end: the calls are queued in far less than 2 s.
        client = Client(
            write_key=key,
            host=http_base_url,
            max_retries=1,
            upload_size=upload_size,
            upload_interval=2,
            on_error=lambda error, batch: errors.append(error),
        )
        for properties in calls:
            client.track(user, "Cart Viewed", properties)
        client.shutdown()
        return errors

    assert await asyncio.to_thread(send) == []

    async def profile() -> dict[str, Any] | None:
        found = await app_client.get(
            "/v1/customers/lookup",
            params={"kind": "user_id", "value": user},
            headers=bearer(read_token),
        )
        done = found.status_code == 200 and found.json()["event_count"] == len(calls)
        return found.json() if done else None

    return await wait_until(profile)  # type: ignore[no-any-return]


async def test_rudder_sdk_pythons_batch_of_large_events_is_stored_whole(
    http_base_url: str,
    make_source: SourceFactory,
    app_client: httpx.AsyncClient,
    read_token: str,
    pipeline: Pipeline,
) -> None:
    # At the SDK's defaults, 100 calls a batch: 100 carts of 90 products, 1.1 MB in all,
    # beyond the 500 KB Segment's libraries keep to. A batch refused is lost whole.
    _, key = await make_source(name="rudder-carts")
    carts = [{"cart_id": f"c-{n}", "products": _cart(90)} for n in range(100)]
    assert len(orjson.dumps(carts)) > 1_000_000
    await _rudder_batch(http_base_url, key, app_client, read_token, "rudder-cart", carts)
    (latest, *_) = await _timeline(app_client, read_token, "rudder-cart")
    assert latest["properties"]["products"] == _cart(90)


async def test_rudder_sdk_pythons_batch_cut_at_its_4_mib_is_stored_whole(
    http_base_url: str,
    make_source: SourceFactory,
    app_client: httpx.AsyncClient,
    read_token: str,
    pipeline: Pipeline,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Up to 200 calls a batch: the SDK closes it once its calls reach 4 MiB as it counts
    # them, and sends it with the call that got there, the body beyond 4 MiB.
    caplog.set_level(logging.DEBUG, logger="rudderstack")
    _, key = await make_source(name="rudder-4mib")
    calls = [{"n": n, "note": "x" * 29_500} for n in range(142)]
    await _rudder_batch(http_base_url, key, app_client, read_token, "rudder-4mib", calls, 200)
    assert "hit batch size limit" in caplog.text


async def test_rudder_sdk_python_gives_up_on_a_refusal_and_retries_a_rate_limit(
    http_base_url: str, make_source: SourceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library reads `code` and `message` from an error answer: without them it took a
    4xx for a network failure and retried it (10 times by default, backing off), its one
    upload thread holding back every event queued behind it. A 429 is retried."""
    from rudderstack.analytics import request
    from rudderstack.analytics.client import Client

    answers: list[int] = []
    post = request._session.post

    def recorded(*args: Any, **kwargs: Any) -> Any:
        response = post(*args, **kwargs)
        answers.append(response.status_code)
        return response

    monkeypatch.setattr(request._session, "post", recorded)
    _, key = await make_source(settings={"rate_limit_per_s": 0.001})  # one event, then 429

    def send(write_key: str, calls: int) -> list[Any]:
        errors: list[Any] = []
        client = Client(
            write_key=write_key,
            host=http_base_url,
            max_retries=2,
            on_error=lambda error, batch: errors.append(error),
        )
        for _ in range(calls):
            client.track("u-1", "Signed Up")
            client.flush()
        client.shutdown()
        return errors

    (refused,) = await asyncio.to_thread(send, "pw_not-a-key", 1)
    assert answers == [401]
    assert (refused.status, refused.code) == (401, "unauthorized")
    assert "write key" in refused.message
    answers.clear()
    (limited,) = await asyncio.to_thread(send, key, 2)
    assert answers == [200, 429, 429, 429]
    assert (limited.status, limited.code) == (429, "rate-limited")
