"""Identity stitching in the pipeline, on the real database: merges, merge protection, and
reads of merged ids."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.customers.repository import MAX_MERGE_HOPS
from app.identity import repository
from app.kit.metrics import PIPELINE_RETRIES
from app.main import create_app
from app.pipeline.runner import Pipeline
from tests.factories import touchpoint
from tests.helpers import basic, bearer, refusing, scalar, serving, wait_until


async def _identify_and_store(
    client: httpx.AsyncClient,
    write_key: str,
    db: AsyncEngine,
    *people: dict[str, dict[str, str]],
) -> None:
    """An identify call per ``{anonymousId: traits}``, each answered 200, then wait until the
    pipeline has stored them all (the database holding no other events)."""
    for person in people:
        ((anonymous_id, traits),) = person.items()
        call = {"anonymousId": anonymous_id, "traits": traits}
        response = await client.post("/v1/identify", json=call, headers=basic(write_key))
        assert response.status_code == 200, response.text

    async def all_stored() -> bool:
        return await scalar(db, "SELECT count(*) FROM events") == len(people)

    await wait_until(all_stored)


async def _profile(client: httpx.AsyncClient, token: str, kind: str, value: str) -> dict[str, Any]:
    response = await client.get(
        "/v1/customers/lookup", params={"kind": kind, "value": value}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_anonymous_browsing_then_login_then_crm_contact_make_one_customer_with_one_timeline(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    # Browsing on two devices, each anonymous: two customers for now.
    await handle(
        [
            touchpoint(source_id, anonymous_id="phone-browser", event="Product Viewed", at=0),
            touchpoint(source_id, anonymous_id="laptop-browser", event="Products Searched", at=10),
        ]
    )
    assert await scalar(db, "SELECT count(*) FROM customers WHERE merged_into IS NULL") == 2
    # Logging in on the laptop ties it to the user; then on the phone: the two merge.
    await handle(
        [
            touchpoint(
                source_id,
                anonymous_id="laptop-browser",
                user_id="u-7",
                type="identify",
                event=None,
                extra_ids=[("email", "ada@example.com")],
                traits={"plan": "free"},
                at=20,
            ),
        ]
    )
    await handle(
        [
            touchpoint(
                source_id, anonymous_id="phone-browser", user_id="u-7", event="Signed Up", at=30
            )
        ]
    )
    # The CRM knows her by email and CRM id.
    await handle(
        [
            touchpoint(
                source_id,
                type="identify",
                event=None,
                channel="crm",
                at=40,
                extra_ids=[("crm_id", "CRM-1"), ("email", "ada@example.com")],
                traits={"plan": "gold", "name": "Ada"},
            ),
        ]
    )
    assert await scalar(db, "SELECT count(*) FROM customers WHERE merged_into IS NULL") == 1
    profile = await _profile(app_client, read_token, "crm_id", "CRM-1")
    assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
        ("anonymous_id", "phone-browser"),
        ("anonymous_id", "laptop-browser"),
        ("user_id", "u-7"),
        ("email", "ada@example.com"),
        ("crm_id", "CRM-1"),
    }
    assert profile["event_count"] == 5
    assert profile["traits"] == {"plan": "gold", "name": "Ada"}
    assert profile["channel_counts"] == {"web": 4, "crm": 1}
    timeline = (
        await app_client.get(f"/v1/customers/{profile['id']}/timeline", headers=bearer(read_token))
    ).json()
    assert [i["event"] for i in timeline["items"]] == [
        None,
        "Signed Up",
        None,
        "Products Searched",
        "Product Viewed",
    ]
    assert await scalar(db, "SELECT count(*) FROM merges") == 1


async def test_two_people_on_one_shared_device_stay_two_customers(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    await handle(
        [touchpoint(source_id, anonymous_id="family-ipad", user_id="mum", event="Signed Up", at=0)]
    )
    await handle(
        [touchpoint(source_id, anonymous_id="family-ipad", user_id="son", event="Signed Up", at=60)]
    )
    mum = await _profile(app_client, read_token, "user_id", "mum")
    son = await _profile(app_client, read_token, "user_id", "son")
    assert mum["id"] != son["id"]
    assert ("anonymous_id", "family-ipad") in {(i["kind"], i["value"]) for i in mum["identities"]}
    assert ("anonymous_id", "family-ipad") not in {
        (i["kind"], i["value"]) for i in son["identities"]
    }
    assert son["event_count"] == 1
    assert mum["event_count"] == 1
    flags = await scalar(
        db, "SELECT flags::text FROM events WHERE customer_id = :c", {"c": uuid.UUID(son["id"])}
    )
    assert "not_linked:anonymous_id" in flags
    assert await scalar(db, "SELECT count(*) FROM merges") == 0


async def test_a_merged_id_answers_with_the_survivor_on_every_read(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    await handle([touchpoint(source_id, anonymous_id="a1", event="Product Viewed", at=0)])
    await handle([touchpoint(source_id, user_id="u1", event="Signed Up", at=10)])
    older = await _profile(app_client, read_token, "anonymous_id", "a1")
    newer = await _profile(app_client, read_token, "user_id", "u1")
    await handle(
        [touchpoint(source_id, anonymous_id="a1", user_id="u1", event="Order Completed", at=20)]
    )

    merged = (
        await app_client.get(f"/v1/customers/{newer['id']}", headers=bearer(read_token))
    ).json()
    assert merged["id"] == older["id"], "merges go into the oldest customer"
    assert merged["merged"] is True
    assert merged["requested_id"] == newer["id"]
    assert merged["event_count"] == 3
    timeline = (
        await app_client.get(f"/v1/customers/{newer['id']}/timeline", headers=bearer(read_token))
    ).json()
    assert timeline["customer_id"] == older["id"]
    assert timeline["merged"] is True
    assert [i["event"] for i in timeline["items"]] == [
        "Order Completed",
        "Signed Up",
        "Product Viewed",
    ]
    log = await scalar(db, "SELECT survivor_id::text || ' ' || merged_id::text FROM merges")
    assert log == f"{older['id']} {newer['id']}"
    linked = await scalar(db, "SELECT identifiers::text FROM merges")
    assert orjson.loads(linked) == [
        {"kind": "user_id", "value": "u1"},
        {"kind": "anonymous_id", "value": "a1"},
    ], "the log keeps the identifiers that linked them, as JSON"
    # The merged customer keeps no counts of its own: totals are not counted twice.
    assert await scalar(db, "SELECT sum(event_count) FROM customers") == 3


async def test_an_id_merged_twice_answers_with_the_last_survivor_on_every_read(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    """The customer of a3 merges into a2's, then a2's into u1's: a3's row is re-pointed at
    u1's, and every read of a3's id answers with u1's."""
    await handle([touchpoint(source_id, user_id="u1", at=0)])
    await handle([touchpoint(source_id, anonymous_id="a2", at=10)])
    await handle([touchpoint(source_id, anonymous_id="a3", at=20)])
    ids = {
        u: (await _profile(app_client, read_token, kind, u))["id"]
        for kind, u in (("user_id", "u1"), ("anonymous_id", "a2"), ("anonymous_id", "a3"))
    }
    email = [("email", "two@example.com")]
    await handle([touchpoint(source_id, anonymous_id="a2", extra_ids=email, at=30)])
    await handle([touchpoint(source_id, anonymous_id="a3", extra_ids=email, at=40)])
    await handle([touchpoint(source_id, user_id="u1", extra_ids=email, at=50)])

    first, last = ids["u1"], ids["a3"]
    pointer = await scalar(db, "SELECT merged_into::text FROM customers WHERE id = :c", {"c": last})
    assert pointer == first, "one hop, not a chain through a2's customer"
    headers = bearer(read_token)
    for path in ("", "/timeline", "/journey"):
        answer = (await app_client.get(f"/v1/customers/{last}{path}", headers=headers)).json()
        survivor = answer.get("id") or answer["customer_id"]
        assert (survivor, answer["merged"], answer["requested_id"]) == (first, True, last), path
    profile = (await app_client.get(f"/v1/customers/{last}", headers=headers)).json()
    assert profile["event_count"] == 6
    assert {i["value"] for i in profile["identities"]} == {"u1", "a2", "a3", "two@example.com"}


async def test_an_id_at_the_end_of_a_longer_run_of_merges_than_reads_follow_reads_the_survivor(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    """Twenty customers, then nineteen merges in a row, the newest customer into the one
    before it, that one into the one before, and so on: every merged customer points at the
    oldest, and the newest id reads its profile, timeline and journey (reads follow at most
    MAX_MERGE_HOPS links)."""
    count = MAX_MERGE_HOPS + 4
    for n in range(count):
        await handle([touchpoint(source_id, anonymous_id=f"a{n}", event="Signed Up", at=n)])
    ids = [
        (await _profile(app_client, read_token, "anonymous_id", f"a{n}"))["id"]
        for n in range(count)
    ]
    for n in range(count - 1, 0, -1):
        linking = [("anonymous_id", f"a{n - 1}")]
        await handle([touchpoint(source_id, anonymous_id=f"a{n}", extra_ids=linking, at=100 - n)])

    first, last = ids[0], ids[-1]
    pointers = await scalar(
        db,
        "SELECT count(*) FILTER (WHERE merged_into = :c) || '/' || count(merged_into)"
        " FROM customers",
        {"c": uuid.UUID(first)},
    )
    assert pointers == f"{count - 1}/{count - 1}", "each merged customer one hop from the oldest"
    headers = bearer(read_token)
    for path in ("", "/timeline", "/journey"):
        answer = (await app_client.get(f"/v1/customers/{last}{path}", headers=headers)).json()
        survivor = answer.get("id") or answer["customer_id"]
        assert (survivor, answer["merged"], answer["requested_id"]) == (first, True, last), path
    profile = (await app_client.get(f"/v1/customers/{last}", headers=headers)).json()
    assert profile["event_count"] == 2 * count - 1
    assert (profile["identity_count"], profile["identities_truncated"]) == (count, True)
    identities = (await app_client.get(f"/v1/customers/{last}/identities", headers=headers)).json()
    assert (identities["customer_id"], identities["merged"]) == (first, True)
    assert len(identities["items"]) == count
    timeline = (await app_client.get(f"/v1/customers/{last}/timeline", headers=headers)).json()
    assert len(timeline["items"]) == 2 * count - 1
    journey = (await app_client.get(f"/v1/customers/{last}/journey", headers=headers)).json()
    assert (journey["up_to_date"], journey["current_stage"]) == (True, "consideration"), journey


async def test_a_corrupt_merge_cycle_answers_after_a_bounded_walk(
    app_client: httpx.AsyncClient,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    """Two customers merged into each other (never written by Percorso): a read follows at
    most MAX_MERGE_HOPS links and answers, rather than looping."""
    await handle([touchpoint(source_id, user_id="c1", at=0)])
    await handle([touchpoint(source_id, user_id="c2", at=10)])
    one = (await _profile(app_client, read_token, "user_id", "c1"))["id"]
    two = (await _profile(app_client, read_token, "user_id", "c2"))["id"]
    async with db.begin() as conn:
        for loser, survivor in ((one, two), (two, one)):
            await conn.execute(
                text("UPDATE customers SET merged_into = :s WHERE id = :l"),
                {"s": uuid.UUID(survivor), "l": uuid.UUID(loser)},
            )
    for path in ("", "/timeline", "/journey"):
        answer = await app_client.get(f"/v1/customers/{one}{path}", headers=bearer(read_token))
        assert answer.status_code == 200, (path, answer.text)


async def test_an_identifier_recorded_by_another_consumer_meanwhile_retries_the_batch(
    handle: Any, db: AsyncEngine, source_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owners read misses an identity another consumer committed just after it: the
    batch's insert of that identity conflicts, and the retry attaches the event to the
    customer who has it, instead of a second customer."""
    await handle([touchpoint(source_id, user_id="u1", at=0)])
    read = repository.owners
    misses = [True]

    async def miss_once(conn: Any, keys: Any) -> dict[Any, uuid.UUID]:
        if misses and misses.pop():
            return {}  # as if read just before the other consumer's commit
        return await read(conn, keys)

    monkeypatch.setattr(repository, "owners", miss_once)
    retries = PIPELINE_RETRIES.labels("stale_read")
    before = retries._value.get()
    outcome = await handle([touchpoint(source_id, user_id="u1", at=1)])
    assert (outcome.stored, outcome.dead_letters) == (1, [])
    assert retries._value.get() == before + 1
    assert await scalar(db, "SELECT count(*) FROM customers") == 1
    assert await scalar(db, "SELECT count(*) FROM identities") == 1
    assert await scalar(db, "SELECT sum(event_count) FROM customers") == 2


async def test_an_identifier_linked_once_a_refused_event_is_isolated_carries_no_stale_flag(
    handle: Any, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    """On the first attempt e1 gives the device to u1 and merge protection keeps it from u2
    (e2); the database refuses e1, which is isolated and dead-lettered, and e2 is stored
    with the device linked: its flags say what that attempt did, not the first one."""
    e1 = touchpoint(source_id, user_id="u1", anonymous_id="a", message_id="e1", at=0)
    e2 = touchpoint(source_id, user_id="u2", anonymous_id="a", message_id="e2", at=1)
    async with refusing(db, "message_id <> 'e1'"):
        outcome = await handle([e1, e2])
    assert (outcome.stored, len(outcome.dead_letters)) == (1, 1)
    owner = "SELECT customer_id FROM identities WHERE kind = :k AND value = :v"
    device = await scalar(db, owner, {"k": "anonymous_id", "v": "a"})
    assert device == await scalar(db, owner, {"k": "user_id", "v": "u2"})
    assert await scalar(db, "SELECT flags FROM events WHERE message_id = 'e2'") == []


@pytest.mark.pipeline
async def test_contacts_giving_a_blocked_phone_number_in_other_spellings_stay_apart(
    settings: Settings, write_key: str, read_token: str, db: AsyncEngine, pipeline: Pipeline
) -> None:
    """The operator blocks the company switchboard; two colleagues each give it, spelled
    their own way. They stay two customers, and the number identifies nobody."""
    switchboard = settings.model_copy(update={"blocked_identifier_values": "+390212345678"})
    async with serving(create_app(switchboard)) as client:
        await _identify_and_store(
            client,
            write_key,
            db,
            {"a1": {"email": "ada@example.com", "phone": "02 1234 5678"}},
            {"a2": {"email": "bob@example.com", "phone": "+39 02 1234 5678"}},
        )
        assert await scalar(db, "SELECT count(*) FROM customers WHERE merged_into IS NULL") == 2
        ada = await _profile(client, read_token, "email", "ada@example.com")
        assert {(i["kind"], i["value"]) for i in ada["identities"]} == {
            ("anonymous_id", "a1"),
            ("email", "ada@example.com"),
        }
        flags = "SELECT array_agg(DISTINCT f) FROM events, jsonb_array_elements_text(flags) f"
        assert await scalar(db, flags) == ["rejected_identifier:phone"]
        found = await client.get(
            "/v1/customers/lookup",
            params={"kind": "phone", "value": "+390212345678"},
            headers=bearer(read_token),
        )
        assert found.status_code == 404


@pytest.mark.pipeline
async def test_an_email_in_either_unicode_form_is_one_customer_found_by_either(
    app_client: httpx.AsyncClient,
    write_key: str,
    read_token: str,
    db: AsyncEngine,
    pipeline: Pipeline,
) -> None:
    """ "josé" typed with one "é" (NFC) on one device and as "e" and a combining accent (NFD)
    on another: one person, one customer, found by the address in either form."""
    nfc, nfd = "jos\u00e9@example.com", "jose\u0301@example.com"
    await _identify_and_store(
        app_client, write_key, db, {"a1": {"email": nfc}}, {"a2": {"email": nfd}}
    )
    assert await scalar(db, "SELECT count(*) FROM customers WHERE merged_into IS NULL") == 1
    by_nfc = await _profile(app_client, read_token, "email", nfc)
    by_nfd = await _profile(app_client, read_token, "email", nfd)
    assert by_nfd["id"] == by_nfc["id"]
    assert {(i["kind"], i["value"]) for i in by_nfc["identities"]} == {
        ("anonymous_id", "a1"),
        ("anonymous_id", "a2"),
        ("email", nfc),
    }
