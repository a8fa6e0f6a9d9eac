"""The read API: profiles, lookup, timeline pages and filters, and who may read."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.customers.endpoints import direct_route as customers_direct
from app.errors import PROBLEM_JSON
from app.journey.model import load_model
from app.kit.direct import DirectRoutes
from app.main import create_app
from app.timeline.endpoints import direct_route as timeline_direct
from app.timeline.schemas import TimelinePage
from tests.factories import touchpoint
from tests.helpers import basic, bearer, kill_api_connections, scalar, serving


async def _customer_id(client: httpx.AsyncClient, token: str, kind: str, value: str) -> str:
    response = await client.get(
        "/v1/customers/lookup", params={"kind": kind, "value": value}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def test_profile_shows_identities_traits_stage_and_counts(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await handle(
        [
            touchpoint(source_id, anonymous_id="anon-1", event="Product Viewed", at=0),
            touchpoint(
                source_id,
                anonymous_id="anon-1",
                user_id="u-42",
                type="identify",
                event=None,
                extra_ids=[("email", "ada@example.com")],
                traits={"name": "Ada", "email": "ada@example.com"},
                at=60,
            ),
            touchpoint(source_id, user_id="u-42", event="Email Opened", channel="email", at=120),
        ]
    )
    cid = await _customer_id(app_client, read_token, "email", "  ADA@example.COM ")
    profile = (await app_client.get(f"/v1/customers/{cid}", headers=bearer(read_token))).json()
    assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
        ("anonymous_id", "anon-1"),
        ("user_id", "u-42"),
        ("email", "ada@example.com"),
    }
    assert profile["traits"] == {"name": "Ada", "email": "ada@example.com"}
    assert profile["event_count"] == 3
    assert profile["channel_counts"] == {"web": 2, "email": 1}
    assert profile["stage"] == "consideration"
    assert profile["merged"] is False
    assert await _customer_id(app_client, read_token, "anonymous_id", "anon-1") == cid


async def test_timeline_pages_newest_first_with_a_cursor_and_filters(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    events = [
        touchpoint(
            source_id,
            user_id="pager",
            event=f"Step {i}",
            at=i * 10,
            channel="email" if i % 3 == 0 else "web",
        )
        for i in range(25)
    ]
    await handle(events)
    cid = await _customer_id(app_client, read_token, "user_id", "pager")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = (
            await app_client.get(
                f"/v1/customers/{cid}/timeline", params=params, headers=bearer(read_token)
            )
        ).json()
        seen += [i["event"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"Step {i}" for i in reversed(range(25))]

    emails = (
        await app_client.get(
            f"/v1/customers/{cid}/timeline", params={"channel": "email"}, headers=bearer(read_token)
        )
    ).json()["items"]
    assert [i["event"] for i in emails] == [f"Step {i}" for i in (24, 21, 18, 15, 12, 9, 6, 3, 0)]
    window = (
        await app_client.get(
            f"/v1/customers/{cid}/timeline",
            params={
                "since": "2026-11-01T09:00:50Z",
                "until": "2026-11-01T09:01:20Z",
                "type": "track",
            },
            headers=bearer(read_token),
        )
    ).json()["items"]
    assert [i["event"] for i in window] == ["Step 7", "Step 6", "Step 5"]
    nothing = await app_client.get(
        f"/v1/customers/{cid}/timeline", params={"channel": "crm"}, headers=bearer(read_token)
    )
    assert nothing.status_code == 200
    assert nothing.json()["customer_id"] == cid
    assert nothing.json()["items"] == []
    assert nothing.json()["next_cursor"] is None


async def test_timeline_items_carry_their_json_and_filters_page_with_the_cursor(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    channels = ("web", "email", "in_store")
    events = [
        touchpoint(
            source_id,
            user_id="json",
            event=f"Step {i}",
            at=i,
            channel=channels[i % 3],
            properties={"i": i, "nested": {"list": [1, 2.5, None], "text": "é\u2028"}},
        )
        for i in range(12)
    ]
    events[0].context = {"page": {"path": "/"}, "ip": "203.0.113.9"}
    events[0].flags = ["clock_skew_corrected"]
    await handle(events)
    cid = await _customer_id(app_client, read_token, "user_id", "json")
    url = f"/v1/customers/{cid}/timeline"
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 3, "channel": ["web", "email"]}
    while True:
        page = (await app_client.get(url, params=params, headers=bearer(read_token))).json()
        seen += page["items"]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert [i["event"] for i in seen] == [f"Step {i}" for i in reversed(range(12)) if i % 3 != 2]
    oldest = seen[-1]
    assert oldest["properties"] == {"i": 0, "nested": {"list": [1, 2.5, None], "text": "é\u2028"}}
    assert oldest["context"] == {"page": {"path": "/"}, "ip": "203.0.113.9"}
    assert oldest["flags"] == ["clock_skew_corrected"]
    assert seen[0]["context"] == {}
    assert seen[0]["flags"] == []


async def test_a_timeline_page_is_what_its_response_model_writes(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    """The page is written from the rows, without the response model, and reads as the
    model writes it: times in UTC with "Z", microseconds only when there are any, every
    field in place."""
    times = (
        datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        datetime(2026, 3, 1, 9, 31, 5, 120_000, tzinfo=UTC),
        datetime(2026, 3, 1, 11, 0, 0, 7, tzinfo=timezone(timedelta(hours=2))),
    )
    events = [touchpoint(source_id, user_id="shape", at=at) for at in times]
    events[0].event, events[0].type = None, "identify"
    await handle(events)
    cid = await _customer_id(app_client, read_token, "user_id", "shape")
    response = await app_client.get(
        f"/v1/customers/{cid}/timeline", params={"limit": 2}, headers=bearer(read_token)
    )
    page = response.json()
    assert page == orjson.loads(TimelinePage.model_validate(page).model_dump_json())
    assert [i["occurred_at"] for i in page["items"]] == [
        "2026-03-01T09:31:05.120000Z",
        "2026-03-01T09:30:00Z",
    ]
    rest = await app_client.get(
        f"/v1/customers/{cid}/timeline",
        params={"limit": 2, "cursor": page["next_cursor"]},
        headers=bearer(read_token),
    )
    (oldest,) = rest.json()["items"]
    assert oldest["occurred_at"] == "2026-03-01T09:00:00.000007Z"
    assert rest.json()["next_cursor"] is None
    assert page["items"][1]["event"] is None
    assert page["items"][1]["type"] == "identify"


async def test_profiles_and_timeline_pages_served_directly_are_the_routes_answers(
    app_client: httpx.AsyncClient,
    settings: Settings,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
) -> None:
    """`app.kit.direct` serves these reads without FastAPI's router: the same bytes."""
    await handle([touchpoint(source_id, user_id="twin", at=at) for at in (0, 1, 2)])
    cid = await _customer_id(app_client, read_token, "user_id", "twin")
    routed = create_app(settings)
    routed.user_middleware = [m for m in routed.user_middleware if m.cls is not DirectRoutes]
    reads = [
        (f"/v1/customers/{cid}", {}),
        (f"/v1/customers/{cid}/timeline", {}),
        (f"/v1/customers/{cid}/timeline", {"limit": "2", "channel": ["web", "email"]}),
        (f"/v1/customers/{str(cid).upper()}/timeline", {"type": "track", "until": "2031-01-01"}),
    ]
    async with serving(routed) as router_client:
        for path, params in reads:
            assert timeline_direct("GET", path) or customers_direct("GET", path), path
            direct = await app_client.get(path, params=params, headers=bearer(read_token))
            via_router = await router_client.get(path, params=params, headers=bearer(read_token))
            assert direct.status_code == 200, direct.text
            assert direct.headers.raw == via_router.headers.raw
            assert direct.content == via_router.content


async def test_read_endpoints_refuse_missing_wrong_and_write_credentials(
    app_client: httpx.AsyncClient,
    read_token: str,
    write_key: str,
    handle: Any,
    source_id: uuid.UUID,
) -> None:
    await handle([touchpoint(source_id, user_id="guarded")])
    cid = await _customer_id(app_client, read_token, "user_id", "guarded")
    for path in (
        f"/v1/customers/{cid}",
        f"/v1/customers/{cid}/timeline",
        "/v1/customers/lookup?kind=user_id&value=guarded",
    ):
        missing = await app_client.get(path)
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert (
            await app_client.get(path, headers=bearer("pr_not-a-real-token"))
        ).status_code == 401
        assert (await app_client.get(path, headers=bearer(write_key))).status_code == 403
        assert (await app_client.get(path, headers=basic(write_key))).status_code == 401


async def test_unknown_customers_bad_ids_and_bad_cursors_are_client_errors(
    app_client: httpx.AsyncClient, read_token: str
) -> None:
    unknown = await app_client.get(f"/v1/customers/{uuid.uuid4()}", headers=bearer(read_token))
    assert unknown.status_code == 404
    assert unknown.json()["type"].endswith("/not-found")
    lookup = await app_client.get(
        "/v1/customers/lookup",
        params={"kind": "email", "value": "nobody@example.com"},
        headers=bearer(read_token),
    )
    assert lookup.status_code == 404
    bad_id = await app_client.get("/v1/customers/not-a-uuid", headers=bearer(read_token))
    assert bad_id.status_code == 422
    assert bad_id.headers["content-type"] == "application/problem+json"
    assert bad_id.json()["errors"][0]["field"] == "path.customer_id"
    cursor = await app_client.get(
        f"/v1/customers/{uuid.uuid4()}/timeline",
        params={"cursor": "garbage!"},
        headers=bearer(read_token),
    )
    assert cursor.status_code == 400
    assert cursor.json()["detail"] == "the cursor is not one this API issued"
    bad_limit = await app_client.get(
        f"/v1/customers/{uuid.uuid4()}/timeline", params={"limit": 0}, headers=bearer(read_token)
    )
    assert bad_limit.status_code == 422


def _cursor(position: Any) -> str:
    """``position`` written as the timeline writes its cursors: unpadded base64url JSON (the
    list's tag first, or the position alone as it wrote them before)."""
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


async def test_a_cursor_of_any_other_json_is_the_400_of_a_cursor_not_issued(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await handle([touchpoint(source_id, user_id="cursor", at=0)])
    cid = await _customer_id(app_client, read_token, "user_id", "cursor")
    url = f"/v1/customers/{cid}/timeline"
    before = await app_client.get(url, headers=bearer(read_token))
    at, event_id = "2026-11-01T09:00:00+00:00", str(uuid.uuid4())
    positions: list[Any] = [
        [at, 5],
        [5, event_id],
        [at, None],
        [at],
        [at, event_id, event_id],
        ["timeline", at, 5],
        ["timeline", at],
        ["timeline", at, event_id, event_id],
        ["timeline", [at, event_id]],
        ["Timeline", at, event_id],
        [[at], [event_id]],
        [[at, event_id]],
        {"occurred_at": at, "event_id": event_id},
        at,
        None,
    ]
    for position in positions:
        response = await app_client.get(
            url, params={"cursor": _cursor(position)}, headers=bearer(read_token)
        )
        assert response.status_code == 400, (position, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["detail"] == "the cursor is not one this API issued"
    after = await app_client.get(url, headers=bearer(read_token))
    assert after.json() == before.json()
    assert [i["event"] for i in after.json()["items"]] == ["Product Viewed"]


async def test_times_beyond_the_instants_of_years_1_to_9999_are_client_errors(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    """`since`, `until` and a cursor's time are sent to PostgreSQL in UTC: one whose UTC is
    outside Python's years 1 to 9999 is refused, not a failed query. Without an offset, a
    time is in UTC."""
    await handle([touchpoint(source_id, user_id="edges", at=0)])
    cid = await _customer_id(app_client, read_token, "user_id", "edges")
    url = f"/v1/customers/{cid}/timeline"
    before = await app_client.get(url, headers=bearer(read_token))
    for name, value in (
        ("since", "0001-01-01T00:00:00+05:00"),
        ("until", "9999-12-31T23:59:59-05:00"),
    ):
        response = await app_client.get(url, params={name: value}, headers=bearer(read_token))
        assert response.status_code == 422, (value, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        (error,) = response.json()["errors"]
        assert error["field"] == f"query.{name}"
        assert "within years 1 to 9999 in UTC" in error["message"]
    event_id = before.json()["items"][0]["event_id"]
    for at in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"):
        for position in (["timeline", at, event_id], [at, event_id]):
            response = await app_client.get(
                url, params={"cursor": _cursor(position)}, headers=bearer(read_token)
            )
            assert response.status_code == 400, (position, response.text)
            assert response.headers["content-type"] == PROBLEM_JSON
            assert response.json()["detail"] == "the cursor is not one this API issued"
    for params, events in (
        ({"since": "0001-01-01T00:00:00", "until": "9999-12-31T23:59:59+00:00"}, 1),
        ({"since": "2026-11-01T09:00:00"}, 1),
        ({"since": "2026-11-01T09:00:01"}, 0),
    ):
        response = await app_client.get(url, params=params, headers=bearer(read_token))
        assert response.status_code == 200, (params, response.text)
        assert len(response.json()["items"]) == events, params
    after = await app_client.get(url, headers=bearer(read_token))
    assert after.json() == before.json()


async def test_reads_name_kinds_as_events_do_and_refuse_text_postgres_cannot_hold(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    """A kind is normalised as an externalIds type is ("Loyalty Card" is loyalty_card); a
    NUL character, which no stored text holds, is a client error, not a failed query."""
    await handle([touchpoint(source_id, user_id="u-9", extra_ids=[("loyalty_card", "LC-9")])])
    cid = await _customer_id(app_client, read_token, "Loyalty Card", "LC-9")
    assert cid == await _customer_id(app_client, read_token, "userId", "u-9")
    nul_kind = await app_client.get(
        "/v1/customers/lookup", params={"kind": "a\x00b", "value": "x"}, headers=bearer(read_token)
    )
    assert nul_kind.status_code == 404, nul_kind.text
    nul_stage = await app_client.get(
        f"/v1/customers/{cid}/timeline",
        params={"stage": ["awareness", "a\x00b"]},
        headers=bearer(read_token),
    )
    assert nul_stage.status_code == 422, nul_stage.text
    assert nul_stage.json()["errors"][0]["field"] == "query.stage.1"


async def test_channel_counts_add_up_across_batches(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await handle(
        [
            touchpoint(source_id, user_id="u-7", channel="web", at=0),
            touchpoint(source_id, user_id="u-7", channel="email", at=1),
        ]
    )
    await handle([touchpoint(source_id, user_id="u-7", channel="web", at=2)])
    await handle(
        [
            touchpoint(source_id, user_id="u-7", channel="in_store", at=3),
            touchpoint(source_id, user_id="u-7", channel="web", at=4),
        ]
    )
    cid = await _customer_id(app_client, read_token, "user_id", "u-7")
    profile = (await app_client.get(f"/v1/customers/{cid}", headers=bearer(read_token))).json()
    assert profile["channel_counts"] == {"web": 3, "email": 1, "in_store": 1}
    assert profile["event_count"] == 5


async def test_customers_created_and_merged_in_one_batch_go_in_with_their_final_profile(
    app_client: httpx.AsyncClient,
    db: AsyncEngine,
    settings: Settings,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
) -> None:
    """New customers are inserted with their profile and journey, not updated afterwards:
    what that must still give, including a new customer merged into another new one."""
    await handle(
        [
            touchpoint(source_id, anonymous_id="anon-n", event="Product Viewed", at=10),
            touchpoint(source_id, user_id="u-n", event="Email Opened", channel="email", at=20),
            touchpoint(
                source_id,
                anonymous_id="anon-n",
                user_id="u-n",
                type="identify",
                event=None,
                traits={"name": "Nia"},
                at=30,
            ),
        ]
    )
    cid = await _customer_id(app_client, read_token, "user_id", "u-n")
    assert await _customer_id(app_client, read_token, "anonymous_id", "anon-n") == cid
    profile = (await app_client.get(f"/v1/customers/{cid}", headers=bearer(read_token))).json()
    assert profile["event_count"] == 3
    assert profile["channel_counts"] == {"web": 2, "email": 1}
    assert profile["traits"] == {"name": "Nia"}
    assert profile["first_seen_at"].startswith("2026-11-01T09:00:10")
    assert profile["last_seen_at"].startswith("2026-11-01T09:00:30")
    stages = await scalar(
        db,
        "SELECT array_agg(stage ORDER BY occurred_at) FROM events WHERE customer_id = :id",
        {"id": uuid.UUID(cid)},
    )
    assert profile["stage"] is not None
    assert profile["stage"] == stages[-1]
    journey = (
        await app_client.get(f"/v1/customers/{cid}/journey", headers=bearer(read_token))
    ).json()
    assert journey["up_to_date"] is True
    assert journey["current_stage"] == profile["stage"]
    # The customer that u-n's first event created, merged away in the same batch: the
    # defaults, and a pointer to the survivor.
    loser = await scalar(
        db,
        "SELECT row(event_count, channel_counts::text, traits::text, current_stage,"
        " journey_model)::text FROM customers WHERE merged_into = :id",
        {"id": uuid.UUID(cid)},
    )
    assert loser == "(0,{},{},,)"
    assert load_model(settings.journey_model).fingerprint() == await scalar(
        db, "SELECT journey_model FROM customers WHERE id = :id", {"id": uuid.UUID(cid)}
    )


async def test_a_profile_folds_late_events_merges_and_leaves_stored_traits_exact(
    app_client: httpx.AsyncClient,
    db: AsyncEngine,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
) -> None:
    await handle([touchpoint(source_id, user_id="u-8", channel="web", at=100)])
    await handle([touchpoint(source_id, anonymous_id="a-8", channel="email", at=300)])
    cid = uuid.UUID(await _customer_id(app_client, read_token, "user_id", "u-8"))
    # A value Python would not write back digit for digit: only Postgres merges traits.
    async with db.begin() as conn:
        await conn.execute(
            text(
                "UPDATE customers SET traits = '{\"score\": 3.14159265358979323846}' WHERE id = :id"
            ),
            {"id": cid},
        )
    # A late event (older than both) that links the two: a merge into u-8.
    await handle(
        [
            touchpoint(source_id, user_id="u-8", anonymous_id="a-8", channel="email", at=50),
            touchpoint(source_id, user_id="u-8", channel="web", at=200),
        ]
    )
    profile = (await app_client.get(f"/v1/customers/{cid}", headers=bearer(read_token))).json()
    assert profile["merged"] is False
    assert profile["event_count"] == 4
    assert profile["channel_counts"] == {"web": 2, "email": 2}
    assert profile["first_seen_at"].startswith("2026-11-01T09:00:50")
    assert profile["last_seen_at"].startswith("2026-11-01T09:05:00")
    stored = await scalar(
        db, "SELECT traits ->> 'score' FROM customers WHERE id = :id", {"id": cid}
    )
    assert stored == "3.14159265358979323846"


async def test_a_lost_database_connection_fails_one_read_with_503_then_reads_recover(
    app_client: httpx.AsyncClient,
    db: AsyncEngine,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
) -> None:
    """The read sessions do not ping before each request: a connection lost since (a database
    restart, a failover) answers 503 problem+json once, and the next request reconnects."""
    await handle([touchpoint(source_id, anonymous_id="anon-lost", event="Product Viewed")])
    await _lost_once_then_recovered(app_client, db, read_token, "anon-lost")


async def test_the_timeline_query_on_a_lost_connection_answers_503_then_reads_recover(
    settings: Settings,
    db: AsyncEngine,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
) -> None:
    """With the token cached (as in production), the timeline's own asyncpg query is the
    request's only statement: its connection lost while the query runs answers 503
    problem+json once, and the next read reconnects."""
    await handle([touchpoint(source_id, anonymous_id="anon-raw", event="Product Viewed")])
    app = create_app(settings.model_copy(update={"auth_cache_ttl_s": 300.0}))
    async with serving(app) as client:
        customer = await _customer_id(client, read_token, "anonymous_id", "anon-raw")
        path = f"/v1/customers/{customer}/timeline"
        assert (await client.get(path, headers=bearer(read_token))).status_code == 200

        async with db.connect() as locker:
            # The query waits on this lock; its connection is killed while it waits.
            await locker.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
            request = asyncio.create_task(client.get(path, headers=bearer(read_token)))
            await _until_a_read_waits_on_a_lock(db)
            assert await kill_api_connections(db) >= 1
            lost = await request
            await locker.rollback()
        await _unavailable_then_recovered(lost, client, path, read_token)


async def _until_a_read_waits_on_a_lock(db: AsyncEngine) -> None:
    for _ in range(500):
        async with db.connect() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                    " 'percorso-api' AND datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the timeline query never waited on the lock")


async def _lost_once_then_recovered(
    client: httpx.AsyncClient, db: AsyncEngine, read_token: str, anonymous_id: str
) -> None:
    """Read the customer's timeline, kill the API's database connections, and expect one
    503 problem+json, then the timeline again."""
    customer = await _customer_id(client, read_token, "anonymous_id", anonymous_id)
    path = f"/v1/customers/{customer}/timeline"
    assert (await client.get(path, headers=bearer(read_token))).status_code == 200
    assert await kill_api_connections(db) >= 1

    lost = await client.get(path, headers=bearer(read_token))
    await _unavailable_then_recovered(lost, client, path, read_token)


async def _unavailable_then_recovered(
    lost: httpx.Response, client: httpx.AsyncClient, path: str, read_token: str
) -> None:
    """``lost`` is a 503 problem+json asking for a retry, and the next read of the timeline
    at ``path`` succeeds."""
    assert lost.status_code == 503, lost.text
    assert lost.headers["content-type"] == "application/problem+json"
    assert lost.headers["retry-after"] == "1"
    assert lost.json()["type"].endswith("service-unavailable")

    again = await client.get(path, headers=bearer(read_token))
    assert again.status_code == 200, again.text
    assert [item["event"] for item in again.json()["items"]] == ["Product Viewed"]
