"""The official Segment and RudderStack server libraries, pointed at Percorso, end to end:
their events appear in the timeline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.pipeline.runner import Pipeline
from tests.helpers import bearer, wait_until
from tests.ingest.fixtures import SourceFactory

pytestmark = pytest.mark.pipeline


async def _timeline(client: httpx.AsyncClient, token: str, user_id: str) -> list[dict[str, Any]]:
    found = await client.get(
        "/v1/customers/lookup", params={"kind": "user_id", "value": user_id}, headers=bearer(token)
    )
    if found.status_code == 404:
        return []
    page = await client.get(f"/v1/customers/{found.json()['id']}/timeline", headers=bearer(token))
    items: list[dict[str, Any]] = page.json()["items"]
    return items


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
