"""The journey read API in pages: keyset pagination over a long history, its limits, its
time window, and a merged id paging the survivor's journey."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta, timezone
from typing import Any

import asyncpg
import httpx

from app.errors import PROBLEM_JSON
from tests.factories import T0, touchpoint
from tests.helpers import bearer, walk_pages
from tests.journey.stored import customer_of, feed

# In the default model a sign-up means interest and a product view consideration: alternating
# them changes the stage at every event, as a bot replaying a funnel does.
_BACK_AND_FORTH = ("Signed Up", "Product Viewed")
_CEST = timezone(timedelta(hours=2))


async def _flip_flopper(
    pool: asyncpg.Pool[Any], source_id: uuid.UUID, user_id: str, events: int
) -> uuid.UUID:
    """A customer with ``events`` stage transitions; every fifth pair of events shares its
    time, so transitions tie on `entered_at` and the event id orders them."""
    batch = [
        touchpoint(source_id, user_id=user_id, event=_BACK_AND_FORTH[n % 2], at=(n // 2) * 2 * 60)
        if n % 10 < 2
        else touchpoint(source_id, user_id=user_id, event=_BACK_AND_FORTH[n % 2], at=n * 60)
        for n in range(events)
    ]
    await feed(pool, "default", batch)
    return await customer_of(pool, user_id)


async def _stored(pool: asyncpg.Pool[Any], customer: uuid.UUID) -> list[tuple[str, str]]:
    """(entered_at, event_id) of the customer's transitions, oldest first, as stored."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT entered_at, event_id FROM stage_transitions WHERE customer_id = $1"
            " ORDER BY entered_at, event_id",
            customer,
        )
    return [(r["entered_at"].isoformat().replace("+00:00", "Z"), str(r["event_id"])) for r in rows]


def _keys(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["entered_at"].replace("+00:00", "Z"), t["event_id"]) for t in page["transitions"]]


async def _walk(
    client: httpx.AsyncClient, token: str, customer: object, **params: Any
) -> list[dict[str, Any]]:
    return await walk_pages(client, token, f"/v1/customers/{customer}/journey", **params)


async def test_pages_walk_every_transition_once_oldest_first_with_the_stages_on_each(
    app_client: httpx.AsyncClient,
    read_token: str,
    pool: asyncpg.Pool[Any],
    source_id: uuid.UUID,
) -> None:
    customer = await _flip_flopper(pool, source_id, "bot", 130)
    stored = await _stored(pool, customer)
    assert len(stored) == 130

    default = await _walk(app_client, read_token, customer)
    assert [len(p["transitions"]) for p in default] == [100, 30]

    pages = await _walk(app_client, read_token, customer, limit=7)
    assert [len(p["transitions"]) for p in pages] == [7] * 18 + [4]
    assert [key for page in pages for key in _keys(page)] == stored
    for page in pages:
        assert (page["customer_id"], page["merged"]) == (str(customer), False)
        assert (page["current_stage"], page["furthest_stage"]) == ("consideration", "consideration")
    walked = [t for page in pages for t in page["transitions"]]
    assert walked[0]["from_stage"] is None
    for earlier, later in itertools.pairwise(walked):
        assert later["from_stage"] == earlier["to_stage"]
        assert earlier["exited_at"] == later["entered_at"]
    assert walked[-1]["exited_at"] is None

    # A page that ends exactly at the last transition says so: no empty page after it.
    exact = await _walk(app_client, read_token, customer, limit=65)
    assert [len(p["transitions"]) for p in exact] == [65, 65]


async def test_since_and_until_bound_entered_at_and_page_within_the_window(
    app_client: httpx.AsyncClient,
    read_token: str,
    pool: asyncpg.Pool[Any],
    source_id: uuid.UUID,
) -> None:
    customer = await _flip_flopper(pool, source_id, "window", 40)
    stored = await _stored(pool, customer)
    since, until = T0 + timedelta(minutes=12), T0 + timedelta(minutes=31)
    window = [
        k for k in stored if since.isoformat() <= k[0].replace("Z", "+00:00") < until.isoformat()
    ]
    assert 0 < len(window) < len(stored)

    # The same instants written at another offset, and without one (UTC).
    for bounds in (
        {"since": since.isoformat(), "until": until.astimezone(_CEST).isoformat()},
        {"since": since.replace(tzinfo=None).isoformat(), "until": until.isoformat()},
    ):
        pages = await _walk(app_client, read_token, customer, limit=3, **bounds)
        assert [key for page in pages for key in _keys(page)] == window
        assert len(pages) == -(-len(window) // 3)


async def test_limits_and_cursors_that_are_not_ours_are_client_errors(
    app_client: httpx.AsyncClient,
    read_token: str,
    pool: asyncpg.Pool[Any],
    source_id: uuid.UUID,
) -> None:
    customer = await _flip_flopper(pool, source_id, "limits", 3)
    url = f"/v1/customers/{customer}/journey"
    for limit in (0, 1001, -1, "ten"):
        response = await app_client.get(url, params={"limit": limit}, headers=bearer(read_token))
        assert response.status_code == 422, (limit, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["errors"][0]["field"] == "query.limit"
    most = await app_client.get(url, params={"limit": 1000}, headers=bearer(read_token))
    assert most.status_code == 200
    assert len(most.json()["transitions"]) == 3

    for cursor in ("garbage!", "WyJ4IiwieSJd", "W10"):  # not base64; ["x","y"]; []
        response = await app_client.get(url, params={"cursor": cursor}, headers=bearer(read_token))
        assert response.status_code == 400, (cursor, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["detail"] == "the cursor is not one this API issued"
    too_long = await app_client.get(url, params={"cursor": "A" * 201}, headers=bearer(read_token))
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["field"] == "query.cursor"
    bad_time = await app_client.get(url, params={"since": "yesterday"}, headers=bearer(read_token))
    assert bad_time.status_code == 422
    assert bad_time.json()["errors"][0]["field"] == "query.since"


async def test_a_merged_id_pages_through_the_survivors_journey(
    app_client: httpx.AsyncClient,
    read_token: str,
    pool: asyncpg.Pool[Any],
    source_id: uuid.UUID,
) -> None:
    survivor = await _flip_flopper(pool, source_id, "kept", 9)
    loser = await _flip_flopper(pool, source_id, "gone", 2)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE customers SET merged_into = $1 WHERE id = $2", survivor, loser)

    pages = await _walk(app_client, read_token, loser, limit=4)

    assert [key for page in pages for key in _keys(page)] == await _stored(pool, survivor)
    for page in pages:
        assert (page["customer_id"], page["requested_id"], page["merged"]) == (
            str(survivor),
            str(loser),
            True,
        )
