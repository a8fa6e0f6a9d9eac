"""GET /v1/analytics/stages: live customers by current and furthest stage."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from tests.analytics.people import get, machine, page, refused
from tests.factories import T0, touchpoint
from tests.helpers import basic, bearer, serving

DEFAULT_STAGES = [
    "awareness",
    "interest",
    "consideration",
    "purchase",
    "use",
    "loyalty",
    "advocacy",
]


async def _five_customers(handle: Any, source_id: uuid.UUID) -> None:
    """ada goes to purchase and back to consideration; bob stays in awareness; cy starts in
    interest; an anonymous shopper and eve are merged into one (interest, furthest
    consideration); a privacy proxy's open gives a customer no stage."""
    outcome = await handle(
        [
            page(source_id, 0, user_id="ada"),
            touchpoint(source_id, user_id="ada", event="Signed Up", at=10),
            touchpoint(source_id, user_id="ada", event="Product Viewed", at=20),
            touchpoint(source_id, user_id="ada", event="Order Completed", at=30),
            touchpoint(source_id, user_id="ada", event="Product Viewed", at=40),
            page(source_id, 50, user_id="bob"),
            touchpoint(source_id, user_id="cy", event="Signed Up", at=60),
            touchpoint(source_id, anonymous_id="anon-x", event="Product Viewed", at=0),
            machine(touchpoint(source_id, user_id="proxy", event="Email Opened", at=70)),
        ]
    )
    assert outcome.stored == 9
    await handle([page(source_id, 100, user_id="eve")])
    # Links eve to the anonymous shopper: eve is merged into the older customer.
    await handle(
        [touchpoint(source_id, user_id="eve", anonymous_id="anon-x", event="Signed Up", at=200)]
    )


def _counts(distribution: dict[str, Any]) -> dict[str, int]:
    return {s["stage"]: s["customers"] for s in distribution["stages"]}


async def test_live_customers_by_current_and_furthest_stage_in_model_order(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _five_customers(handle, source_id)

    body = await get(app_client, read_token, "stages")

    assert body["model"] == "default"
    assert body["customers"] == 5  # eve counted once, as the survivor
    current, furthest = body["current"], body["furthest"]
    assert [s["stage"] for s in current["stages"]] == DEFAULT_STAGES
    assert [s["stage"] for s in furthest["stages"]] == DEFAULT_STAGES
    assert _counts(current) == {
        "awareness": 1,  # bob
        "interest": 2,  # cy, and eve's survivor (went back from consideration)
        "consideration": 1,  # ada, back from purchase
        "purchase": 0,
        "use": 0,
        "loyalty": 0,
        "advocacy": 0,
    }
    assert _counts(furthest) == {
        "awareness": 1,
        "interest": 1,
        "consideration": 1,
        "purchase": 1,
        "use": 0,
        "loyalty": 0,
        "advocacy": 0,
    }
    assert (current["no_stage"], current["other_stage"]) == (1, 0)
    assert (furthest["no_stage"], furthest["other_stage"]) == (1, 0)
    shares = {s["stage"]: s["share"] for s in current["stages"]}
    assert shares["interest"] == 0.4
    assert shares["purchase"] == 0.0
    assert sum(shares.values()) + current["no_stage"] / 5 == 1


async def test_a_stage_the_model_does_not_have_is_counted_apart(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    await _five_customers(handle, source_id)
    # As a journey computed by another model, before `percorso journey rebuild`.
    async with db.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE customers SET current_stage = 'vip', furthest_stage = 'vip'"
            " WHERE current_stage = 'awareness'"
        )

    body = await get(app_client, read_token, "stages")

    assert body["customers"] == 5
    assert body["current"]["other_stage"] == body["furthest"]["other_stage"] == 1
    assert _counts(body["current"])["awareness"] == 0


async def test_the_last_seen_window_includes_its_start_and_excludes_its_end(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await _five_customers(handle, source_id)
    bob_last_seen = (T0.replace(second=50)).isoformat()  # bob's only event, at T0 + 50 s

    since = await get(app_client, read_token, "stages", last_seen_since=bob_last_seen)
    until = await get(app_client, read_token, "stages", last_seen_until=bob_last_seen)

    # Last seen at or after T0+50: bob (50), cy (60), the proxy's customer (70), eve's
    # survivor (200); before it: ada (40).
    assert since["customers"] == 4
    assert _counts(since["current"])["awareness"] == 1
    assert until["customers"] == 1
    assert _counts(until["current"]) == {**dict.fromkeys(DEFAULT_STAGES, 0), "consideration": 1}
    assert until["last_seen_until"].startswith("2026-11-01T09:00:50")


async def test_no_customers_is_every_stage_at_zero(
    app_client: httpx.AsyncClient, read_token: str
) -> None:
    body = await get(app_client, read_token, "stages")

    assert body["customers"] == 0
    assert body["current"]["stages"] == [
        {"stage": stage, "customers": 0, "share": 0.0} for stage in DEFAULT_STAGES
    ]


async def test_an_inverted_window_or_a_bad_time_is_a_422_and_a_token_is_required(
    app_client: httpx.AsyncClient, read_token: str, write_key: str
) -> None:
    errors = await refused(
        app_client,
        read_token,
        "stages",
        last_seen_since="2026-11-02T00:00:00Z",
        last_seen_until="2026-11-01T00:00:00Z",
    )
    assert "query.last_seen_until" in errors
    errors = await refused(app_client, read_token, "stages", last_seen_since="yesterday")
    assert "query.last_seen_since" in errors

    assert (await app_client.get("/v1/analytics/stages")).status_code == 401
    with_key = await app_client.get("/v1/analytics/stages", headers=basic(write_key))
    assert with_key.status_code in (401, 403)


async def test_a_query_over_its_statement_timeout_is_a_503_problem(
    settings: Settings, db: AsyncEngine, read_token: str
) -> None:
    app = create_app(settings.model_copy(update={"analytics_statement_timeout_ms": 200}))
    async with serving(app) as client, db.connect() as blocker:
        # A lock the query must wait for: the timeout counts the wait, as a slow scan.
        await blocker.exec_driver_sql("BEGIN")
        await blocker.exec_driver_sql("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        response = await client.get("/v1/analytics/stages", headers=bearer(read_token))
        await blocker.exec_driver_sql("ROLLBACK")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/query-timeout")
    assert "PERCORSO_ANALYTICS_STATEMENT_TIMEOUT_MS" in response.json()["detail"]
