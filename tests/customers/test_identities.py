"""A customer's identities: bounded in the profile and the CRM changes feed (a shared device
or a scraper holds tens of thousands of anonymous ids), all of them in pages from
`/v1/customers/{id}/identities`."""

from __future__ import annotations

import base64
import uuid
from itertools import groupby
from typing import Any

import httpx
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.customers.schemas import (
    PROFILE_IDENTITIES,
    PROFILE_IDENTITIES_PER_KIND,
    PROFILE_IDENTITY_KINDS,
)
from app.errors import PROBLEM_JSON
from tests.factories import touchpoint
from tests.helpers import basic, bearer, wait_until, walk_pages


async def _customer(
    handle: Any,
    db: AsyncEngine,
    source_id: uuid.UUID,
    user_id: str,
    anonymous: int,
    prefix: str = "a",
) -> str:
    """A customer known by ``user_id`` and ``anonymous`` anonymous ids (``a00``, ``a01``…),
    one event each, as a shared device's visitors are stitched when one logs in."""
    await handle(
        [
            touchpoint(source_id, user_id=user_id, anonymous_id=f"{prefix}{n:02}", at=n)
            for n in range(anonymous)
        ]
    )
    async with db.connect() as conn:
        found = await conn.execute(
            text("SELECT customer_id FROM identities WHERE kind = 'user_id' AND value = :v"),
            {"v": user_id},
        )
        return str(found.scalar_one())


async def _add(db: AsyncEngine, customer: str, kinds: int, per_kind: int) -> None:
    """Custom kinds ``k000``… with ``per_kind`` values each (``v00``…), straight into the
    table: a sender's `externalIds` would make them one event at a time."""
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO identities (kind, value, customer_id)"
                " SELECT 'k' || lpad(k::text, 3, '0'), 'v' || lpad(v::text, 2, '0'), :c"
                " FROM generate_series(0, :kinds - 1) k, generate_series(0, :per_kind - 1) v"
                " ON CONFLICT DO NOTHING"
            ),
            {"c": uuid.UUID(customer), "kinds": kinds, "per_kind": per_kind},
        )


async def _stored(db: AsyncEngine, customer: str) -> list[tuple[str, str]]:
    """The customer's identities as the database orders them (its collation)."""
    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT kind, value FROM identities WHERE customer_id = :c ORDER BY kind, value"),
            {"c": uuid.UUID(customer)},
        )
        return [(r.kind, r.value) for r in rows]


def _bounded(stored: list[tuple[str, str]]) -> dict[str, Any]:
    """The oracle of a profile's identity fields, from every identity in order."""
    listed, counts = [], {}
    for kind, group in groupby(stored, key=lambda identity: identity[0]):
        values = [value for _, value in group]
        listed += [(kind, value) for value in values[:PROFILE_IDENTITIES_PER_KIND]]
        if len(counts) < PROFILE_IDENTITY_KINDS:
            counts[kind] = len(values)
    listed = listed[:PROFILE_IDENTITIES]
    return {
        "identities": [{"kind": kind, "value": value} for kind, value in listed],
        "identity_counts": counts,
        "identity_count": len(stored),
        "identities_truncated": len(listed) < len(stored),
    }


def _identity_fields(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: answer[key] for key in _bounded([])}


async def test_a_profile_lists_a_bounded_few_of_each_kind_with_every_kinds_count(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    db: AsyncEngine,
    source_id: uuid.UUID,
) -> None:
    shared = await _customer(handle, db, source_id, "kiosk", 25)
    await _add(db, shared, kinds=2, per_kind=3)
    profile = (await app_client.get(f"/v1/customers/{shared}", headers=bearer(read_token))).json()
    assert profile["identities"] == [
        *({"kind": "anonymous_id", "value": f"a{n:02}"} for n in range(10)),
        *({"kind": f"k00{k}", "value": f"v0{v}"} for k in range(2) for v in range(3)),
        {"kind": "user_id", "value": "kiosk"},
    ]
    assert profile["identity_counts"] == {"anonymous_id": 25, "k000": 3, "k001": 3, "user_id": 1}
    assert (profile["identity_count"], profile["identities_truncated"]) == (32, True)
    lookup = await app_client.get(
        "/v1/customers/lookup",
        params={"kind": "anonymous_id", "value": "a24"},  # one the profile leaves out
        headers=bearer(read_token),
    )
    assert lookup.json() == profile

    # Across many kinds: 100 identities in all, and the counts of the first 100 kinds.
    await _add(db, shared, kinds=110, per_kind=2)  # k000 and k001 gain no new values
    profile = (await app_client.get(f"/v1/customers/{shared}", headers=bearer(read_token))).json()
    assert len(profile["identities"]) == PROFILE_IDENTITIES
    assert len(profile["identity_counts"]) == PROFILE_IDENTITY_KINDS
    assert profile["identity_count"] == 25 + 3 * 2 + 108 * 2 + 1
    assert _identity_fields(profile) == _bounded(await _stored(db, shared))

    one = await _customer(handle, db, source_id, "ada", 2, prefix="b")
    profile = (await app_client.get(f"/v1/customers/{one}", headers=bearer(read_token))).json()
    assert _identity_fields(profile) == {
        "identities": [
            {"kind": "anonymous_id", "value": "b00"},
            {"kind": "anonymous_id", "value": "b01"},
            {"kind": "user_id", "value": "ada"},
        ],
        "identity_counts": {"anonymous_id": 2, "user_id": 1},
        "identity_count": 3,
        "identities_truncated": False,
    }


async def _walk(
    client: httpx.AsyncClient, token: str, customer: object, **params: Any
) -> list[dict[str, Any]]:
    return await walk_pages(client, token, f"/v1/customers/{customer}/identities", **params)


def _items(pages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["kind"], i["value"]) for page in pages for i in page["items"]]


async def test_identity_pages_walk_every_identity_once_by_kind_then_value(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    db: AsyncEngine,
    source_id: uuid.UUID,
) -> None:
    customer = await _customer(handle, db, source_id, "kiosk", 30)
    await _add(db, customer, kinds=3, per_kind=4)
    stored = await _stored(db, customer)
    assert len(stored) == 43

    default = await _walk(app_client, read_token, customer)
    assert [len(p["items"]) for p in default] == [43]
    pages = await _walk(app_client, read_token, customer, limit=5)
    assert [len(p["items"]) for p in pages] == [5] * 8 + [3]
    assert _items(pages) == stored
    assert {(p["customer_id"], p["merged"]) for p in pages} == {(customer, False)}

    # One kind, named as events name it; a page ending on the last one is the last page.
    anonymous = await _walk(app_client, read_token, customer, limit=6, kind="Anonymous ID")
    assert _items(anonymous) == [i for i in stored if i[0] == "anonymous_id"]
    assert [len(p["items"]) for p in anonymous] == [6] * 5
    custom = await _walk(app_client, read_token, customer, limit=100, kind="k001")
    assert _items(custom) == [("k001", f"v0{v}") for v in range(4)]
    none = await _walk(app_client, read_token, customer, kind="email")
    assert none == [{**default[0], "items": [], "next_cursor": None}]

    # A cursor from the unfiltered walk goes on with the kind asked for.
    middle = pages[6]["next_cursor"]  # after the 35th: k001's first value
    assert stored[34] == ("k001", "v00")
    response = await app_client.get(
        f"/v1/customers/{customer}/identities",
        params={"cursor": middle, "kind": "k002"},
        headers=bearer(read_token),
    )
    assert [(i["kind"], i["value"]) for i in response.json()["items"]] == [
        ("k002", f"v0{v}") for v in range(4)
    ]
    late = await app_client.get(
        f"/v1/customers/{customer}/identities",
        params={"cursor": pages[7]["next_cursor"], "kind": "anonymous_id"},
        headers=bearer(read_token),
    )
    assert (late.json()["items"], late.json()["next_cursor"]) == ([], None)


async def test_identity_pages_refuse_bad_limits_kinds_and_cursors_and_answer_for_merged_ids(
    app_client: httpx.AsyncClient,
    read_token: str,
    write_key: str,
    handle: Any,
    db: AsyncEngine,
    source_id: uuid.UUID,
) -> None:
    survivor = await _customer(handle, db, source_id, "kept", 3)
    url = f"/v1/customers/{survivor}/identities"
    for params, field in (
        ({"limit": 0}, "query.limit"),
        ({"limit": 1001}, "query.limit"),
        ({"limit": "all"}, "query.limit"),
        ({"kind": "no/kind"}, "query.kind"),
        ({"kind": "k" * 65}, "query.kind"),
        ({"kind": " "}, "query.kind"),
        ({"cursor": "A" * 4097}, "query.cursor"),
    ):
        response = await app_client.get(url, params=params, headers=bearer(read_token))
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["errors"][0]["field"] == field
    assert (await app_client.get(url, params={"limit": 1000}, headers=bearer(read_token))).json()[
        "next_cursor"
    ] is None

    def cursor(position: Any) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")

    for bad in (
        "%%%",
        cursor(["user_id"]),
        cursor(["user_id", 5]),
        cursor(["identities", "a\x00", "b"]),
    ):
        response = await app_client.get(url, params={"cursor": bad}, headers=bearer(read_token))
        assert response.status_code == 400, (bad, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["detail"] == "the cursor is not one this API issued"

    unknown = await app_client.get(
        f"/v1/customers/{uuid.uuid4()}/identities", headers=bearer(read_token)
    )
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == PROBLEM_JSON
    assert (await app_client.get(url)).status_code == 401
    assert (await app_client.get(url, headers=basic(write_key))).status_code == 401

    loser = await _customer(handle, db, source_id, "gone", 1, prefix="b")
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE identities SET customer_id = :s WHERE customer_id = :l"),
            {"s": uuid.UUID(survivor), "l": uuid.UUID(loser)},
        )
        await conn.execute(
            text("UPDATE customers SET merged_into = :s WHERE id = :l"),
            {"s": uuid.UUID(survivor), "l": uuid.UUID(loser)},
        )
    pages = await _walk(app_client, read_token, loser, limit=2)
    assert _items(pages) == await _stored(db, survivor)
    assert len(_items(pages)) == 6
    for page in pages:
        assert (page["customer_id"], page["requested_id"], page["merged"]) == (
            survivor,
            loser,
            True,
        )
    profile = (await app_client.get(f"/v1/customers/{loser}", headers=bearer(read_token))).json()
    assert (profile["id"], profile["requested_id"], profile["identity_count"]) == (
        survivor,
        loser,
        6,
    )


async def test_the_changes_feed_bounds_identities_as_the_profile_and_pages_have_the_rest(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    db: AsyncEngine,
    source_id: uuid.UUID,
) -> None:
    shared = await _customer(handle, db, source_id, "kiosk", 40)
    one = await _customer(handle, db, source_id, "ada", 1, prefix="b")

    async def changed() -> dict[str, Any] | None:
        # A change shows once every transaction older than it has ended (another test's
        # pipeline may still hold one open).
        page = await app_client.get("/v1/contacts/changes", headers=bearer(read_token))
        found = {c["customer_id"]: c for c in page.json()["items"]}
        return found if found.keys() == {shared, one} else None

    changes = await wait_until(changed)
    for customer in (shared, one):
        profile = (
            await app_client.get(f"/v1/customers/{customer}", headers=bearer(read_token))
        ).json()
        assert _identity_fields(changes[customer]) == _identity_fields(profile)
        assert _identity_fields(changes[customer]) == _bounded(await _stored(db, customer))
    assert changes[shared]["identity_counts"] == {"anonymous_id": 40, "user_id": 1}
    assert len(changes[shared]["identities"]) == PROFILE_IDENTITIES_PER_KIND + 1
    assert changes[shared]["identities_truncated"] is True
    assert changes[one]["identities_truncated"] is False
    # What the feed leaves out, the identity pages have.
    walked = await _walk(app_client, read_token, shared, kind="anonymous_id", limit=1000)
    assert len(_items(walked)) == 40
