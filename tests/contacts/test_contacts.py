"""CRM sync: contact upserts through the pipeline, and the changes feed back out."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.service import create_source
from app.db import create_session_factory
from app.errors import PROBLEM_JSON
from app.pipeline.runner import Pipeline
from tests.factories import touchpoint
from tests.helpers import basic, bearer, scalar, wait_until


async def test_contacts_are_upserted_through_the_pipeline_with_a_verdict_each(
    app_client: httpx.AsyncClient,
    write_key: str,
    read_token: str,
    db: AsyncEngine,
    pipeline: Pipeline,
) -> None:
    body = {
        "contacts": [
            {
                "crm_id": "CRM-1",
                "email": " Ada@Example.com ",
                "phone": "333 123 4567",
                "traits": {"name": "Ada", "tier": "gold"},
                "external_ids": [{"id": "LC-1", "type": "loyalty card"}],
            },
            {"traits": {"name": "Nobody"}},
            {"email": "not-an-email"},
            {"crm_id": "CRM-2", "unexpected": True},
        ]
    }
    response = await app_client.post("/v1/contacts", json=body, headers=basic(write_key))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 1
    assert result["rejected"] == 3
    assert [r["status"] for r in result["results"]] == [
        "accepted",
        "rejected",
        "rejected",
        "rejected",
    ]
    assert "crm_id, email, phone or external_ids" in result["results"][1]["errors"][0]["message"]
    assert result["results"][3]["errors"][0]["field"] == "unexpected"

    async def stored() -> dict[str, Any] | None:
        found = await app_client.get(
            "/v1/customers/lookup",
            params={"kind": "phone", "value": "+393331234567"},
            headers=bearer(read_token),
        )
        return found.json() if found.status_code == 200 else None

    profile = await wait_until(stored)
    assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
        ("crm_id", "CRM-1"),
        ("email", "ada@example.com"),
        ("phone", "+393331234567"),
        ("loyalty_card", "LC-1"),
    }
    assert profile["traits"]["tier"] == "gold"
    assert profile["channel_counts"] == {"crm": 1}


async def test_contact_requests_that_are_wholly_wrong_are_refused(
    app_client: httpx.AsyncClient, write_key: str
) -> None:
    too_many = {"contacts": [{"crm_id": str(i)} for i in range(1001)]}
    assert (
        await app_client.post("/v1/contacts", json=too_many, headers=basic(write_key))
    ).status_code == 400
    none_valid = await app_client.post(
        "/v1/contacts", json={"contacts": [{}]}, headers=basic(write_key)
    )
    assert none_valid.status_code == 400
    assert none_valid.headers["content-type"] == "application/problem+json"
    assert none_valid.json()["errors"][0]["status"] == "rejected"
    assert (await app_client.post("/v1/contacts", json={"contacts": []})).status_code == 401
    assert (
        await app_client.post("/v1/contacts", json=[1], headers=basic(write_key))
    ).status_code == 400


async def test_a_body_not_json_and_a_refused_origin_are_documented_problems(
    app_client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """Contacts are read and admitted as tracking calls are: a CSV body is a 415, a browser
    origin the source does not allow a 403, each an answer the API documents (the client
    checks every answer against the OpenAPI document)."""
    async with create_session_factory(db)() as session:
        _, key = await create_source(
            session,
            name="crm",
            channel="crm",
            settings={"allowed_origins": ["https://crm.example"]},
        )
        await session.commit()
    csv = await app_client.post(
        "/v1/contacts",
        content=b"crm_id\nCRM-1\n",
        headers={**basic(key), "content-type": "text/csv"},
    )
    assert csv.status_code == 415
    assert csv.json()["type"].endswith("unsupported-media-type")
    elsewhere = await app_client.post(
        "/v1/contacts",
        json={"contacts": [{"crm_id": "CRM-1"}]},
        headers={**basic(key), "origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403
    assert "https://evil.example" in elsewhere.json()["detail"]
    # An allowed origin goes on to the contacts' own checks (none valid here: nothing sent).
    allowed = await app_client.post(
        "/v1/contacts",
        json={"contacts": [{}]},
        headers={**basic(key), "origin": "https://crm.example"},
    )
    assert allowed.status_code == 400, allowed.text
    assert allowed.json()["errors"][0]["status"] == "rejected"


async def test_true_or_false_is_no_contacts_id(
    app_client: httpx.AsyncClient, write_key: str
) -> None:
    """Not read as 1 or 0, which would make every such contact one person."""
    contacts = [{"crm_id": True}, {"external_ids": [{"id": False, "type": "card"}]}]
    response = await app_client.post(
        "/v1/contacts", json={"contacts": contacts}, headers=basic(write_key)
    )
    assert response.status_code == 400, response.text
    verdicts = response.json()["errors"]
    assert [(v["index"], v["status"]) for v in verdicts] == [(0, "rejected"), (1, "rejected")]
    assert [v["errors"][0]["field"] for v in verdicts] == ["crm_id", "external_ids.0.id"]
    assert "not true or false" in verdicts[0]["errors"][0]["message"]


async def _all_changes(
    client: httpx.AsyncClient, token: str, since: str | None
) -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"limit": 2}
        if since:
            params["since"] = since
        page = (
            await client.get("/v1/contacts/changes", params=params, headers=bearer(token))
        ).json()
        items += page["items"]
        if not page["items"]:
            return items, page["next_cursor"]
        since = page["next_cursor"]


async def _changes_showing(
    client: httpx.AsyncClient, token: str, since: str | None, customers: int
) -> tuple[list[dict[str, Any]], str]:
    """:func:`_all_changes` once it lists ``customers`` customers. The feed stops before the
    oldest transaction still running on the server, whichever database it is in (another
    test's pipeline, another session on a shared server): a change shows once those end."""

    async def showing() -> tuple[list[dict[str, Any]], str] | None:
        items, cursor = await _all_changes(client, token, since)
        return (items, cursor) if len({c["customer_id"] for c in items}) >= customers else None

    found: tuple[list[dict[str, Any]], str] = await wait_until(showing)
    return found


async def test_the_changes_feed_returns_each_change_once_including_merges(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    await handle(
        [
            touchpoint(source_id, anonymous_id="a1", at=0),
            touchpoint(source_id, user_id="u1", at=1),
            touchpoint(source_id, user_id="u2", at=2),
        ]
    )
    first, cursor = await _changes_showing(app_client, read_token, None, 3)
    assert len(first) == 3
    again, cursor = await _all_changes(app_client, read_token, cursor)
    assert again == [], "nothing changed since the cursor"

    await handle([touchpoint(source_id, anonymous_id="a1", user_id="u1", event="Signed Up", at=3)])
    changed, _ = await _changes_showing(app_client, read_token, cursor, 2)
    by_id = {c["customer_id"]: c for c in changed}
    assert len(by_id) == 2, "the survivor and the merged customer changed; u2 did not"
    merged = [c for c in changed if c["merged_into"]]
    assert len(merged) == 1
    survivor = by_id[merged[0]["merged_into"]]
    assert survivor["merged_into"] is None
    assert {(i["kind"], i["value"]) for i in survivor["identities"]} == {
        ("anonymous_id", "a1"),
        ("user_id", "u1"),
    }
    assert survivor["stage"] == "interest"
    bad = await app_client.get(
        "/v1/contacts/changes", params={"since": "%%%"}, headers=bearer(read_token)
    )
    assert bad.status_code == 400


async def test_a_cursor_whose_xid_is_no_xid8_is_the_400_of_a_cursor_not_issued(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await handle([touchpoint(source_id, user_id="u1", at=0)])
    before = await _changes_showing(app_client, read_token, None, 1)
    for xid in (2**64, -1, 10**30):
        since = base64.urlsafe_b64encode(f"{xid}:{uuid.UUID(int=0)}".encode()).decode()
        response = await app_client.get(
            "/v1/contacts/changes", params={"since": since}, headers=bearer(read_token)
        )
        assert response.status_code == 400, (xid, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["detail"] == "`since` is not a cursor this API issued"
    assert await _all_changes(app_client, read_token, None) == before
    last = base64.urlsafe_b64encode(f"{2**64 - 1}:{uuid.UUID(int=0)}".encode()).decode()
    assert await _all_changes(app_client, read_token, last) == ([], last)


async def test_a_change_committed_late_is_not_skipped_by_the_feed(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    await handle(
        [touchpoint(source_id, user_id="slow", at=0), touchpoint(source_id, user_id="fast", at=1)]
    )
    _, cursor = await _changes_showing(app_client, read_token, None, 2)
    slow = await scalar(db, "SELECT customer_id FROM identities WHERE value = 'slow'")
    fast = await scalar(db, "SELECT customer_id FROM identities WHERE value = 'fast'")
    async with db.connect() as open_tx:
        # A transaction changes `slow` first but commits after `fast` is changed and read.
        await open_tx.execute(
            text("UPDATE customers SET traits = '{\"late\": true}' WHERE id = :id"), {"id": slow}
        )
        await handle([touchpoint(source_id, user_id="fast", at=2)])
        during, cursor_during = await _all_changes(app_client, read_token, cursor)
        assert during == [], "nothing is returned past a transaction still running"
        await open_tx.commit()
    after, _ = await _changes_showing(app_client, read_token, cursor_during, 2)
    assert {c["customer_id"] for c in after} == {str(slow), str(fast)}
