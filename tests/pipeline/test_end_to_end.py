"""The whole path on real servers: HTTP → Kafka → consumer → Postgres → read API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.pipeline.runner import Pipeline
from tests.helpers import basic, bearer, wait_until

pytestmark = pytest.mark.pipeline


async def _timeline(client: httpx.AsyncClient, token: str, user_id: str) -> dict[str, Any] | None:
    found = await client.get(
        "/v1/customers/lookup", params={"kind": "user_id", "value": user_id}, headers=bearer(token)
    )
    if found.status_code == 404:
        return None
    customer = f"/v1/customers/{found.json()['id']}"
    page = await client.get(f"{customer}/timeline", headers=bearer(token))
    # The profile read after the page: the batches the page shows are in it too.
    profile = await client.get(customer, headers=bearer(token))
    return {"profile": profile.json(), "timeline": page.json()}


async def test_events_sent_over_http_appear_in_the_timeline_in_order_with_their_stage(
    app_client: httpx.AsyncClient, write_key: str, read_token: str, pipeline: Pipeline
) -> None:
    calls = [
        ("page", {"name": "Home", "timestamp": "2026-11-01T10:00:00Z"}),
        ("track", {"event": "Signed Up", "timestamp": "2026-11-01T10:01:00Z"}),
        (
            "track",
            {
                "event": "Product Viewed",
                "properties": {"sku": "P-1"},
                "timestamp": "2026-11-01T10:02:00Z",
            },
        ),
        (
            "track",
            {
                "event": "Order Completed",
                "properties": {"revenue": 30},
                "timestamp": "2026-11-01T10:03:00Z",
            },
        ),
    ]
    for call, body in calls:
        response = await app_client.post(
            f"/v1/{call}", json={"userId": "ada", **body}, headers=basic(write_key)
        )
        assert response.status_code == 200, response.text
        assert response.json()["success"] is True

    async def all_four() -> dict[str, Any] | None:
        result = await _timeline(app_client, read_token, "ada")
        return result if result and len(result["timeline"]["items"]) == 4 else None

    result = await wait_until(all_four)
    items = result["timeline"]["items"]
    assert [i["event"] for i in items] == ["Order Completed", "Product Viewed", "Signed Up", "Home"]
    assert [i["stage"] for i in items] == ["purchase", "consideration", "interest", "awareness"]
    assert items[1]["properties"] == {"sku": "P-1"}
    assert all(i["channel"] == "web" for i in items)
    profile = result["profile"]
    assert profile["stage"] == "purchase"
    assert profile["event_count"] == 4
    assert {"kind": "user_id", "value": "ada"} in profile["identities"]
    assert profile["first_seen_at"].startswith("2026-11-01T10:00:00")
    assert profile["last_seen_at"].startswith("2026-11-01T10:03:00")
