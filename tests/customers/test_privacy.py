"""Export and erasure of a customer's data (admin token), and what they leave behind."""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.kit import locks
from tests.factories import touchpoint
from tests.helpers import api_process, basic, bearer, profile_of, scalar, wait_until

ADA_EMAIL = "ada.lovelace@example.com"
ADA_IDS = ("anon-ada-laptop", "anon-ada-phone", "user-ada-1815", ADA_EMAIL)
GRACE_IDS = ("anon-grace-1906", "grace.hopper@example.com")


async def _id_of(client: httpx.AsyncClient, token: str, kind: str, value: str) -> str:
    found = await profile_of(client, token, kind, value)
    assert found is not None, (kind, value)
    return str(found["id"])


async def _two_people(
    handle: Any, source_id: uuid.UUID, client: httpx.AsyncClient, token: str
) -> tuple[str, str]:
    """Ada: two devices, merged by her sign-in (so two customers, the phone's merged into
    the laptop's), with her email; Grace: someone else entirely. Ada's two ids."""
    await handle(
        [
            touchpoint(source_id, anonymous_id="anon-ada-laptop", event="Product Viewed", at=0),
            touchpoint(source_id, anonymous_id="anon-ada-phone", event="Article Read", at=10),
            touchpoint(
                source_id,
                anonymous_id="anon-grace-1906",
                event="Order Completed",
                extra_ids=[("email", "grace.hopper@example.com")],
                properties={"coupon": "GRACE-ONLY-COUPON"},
                at=20,
            ),
        ]
    )
    phone = await _id_of(client, token, "anonymous_id", "anon-ada-phone")
    await handle(
        [
            touchpoint(
                source_id,
                anonymous_id="anon-ada-laptop",
                user_id="user-ada-1815",
                type="identify",
                event=None,
                extra_ids=[("anonymous_id", "anon-ada-phone"), ("email", ADA_EMAIL)],
                traits={"name": "Ada", "email": ADA_EMAIL},
                at=30,
            ),
            touchpoint(source_id, user_id="user-ada-1815", event="Order Completed", at=40),
        ]
    )
    return await _id_of(client, token, "email", ADA_EMAIL), phone


def _lines(body: bytes) -> list[dict[str, Any]]:
    assert body.endswith(b"\n")
    return [orjson.loads(line) for line in body.splitlines()]


async def test_export_streams_everything_about_the_person_and_nothing_of_anyone_else(
    app_client: httpx.AsyncClient,
    admin_token: str,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    ada, phone = await _two_people(handle, source_id, app_client, read_token)
    assert phone != ada  # the phone's customer was merged into the laptop's
    # A message of Ada's that could not be stored (its erasure deletes it), and Grace's.
    letter = b'{"traits": {"email": "Ada.Lovelace@Example.com"}, "x": "\xff"}'
    async with db.begin() as conn:
        await conn.execute(
            text(
                'INSERT INTO dead_letters (topic, partition, "offset", item, key, payload,'
                " reason) VALUES ('t', 0, 1, -1, 'anon-x', :ada, 'r'),"
                " ('t', 0, 2, -1, 'anon-grace-1906', :grace, 'r')"
            ),
            {"ada": letter, "grace": b'{"note": "GRACE-ONLY-COUPON"}'},
        )

    response = await app_client.get(f"/v1/customers/{phone}/export", headers=bearer(admin_token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in response.headers["content-disposition"]
    lines = _lines(response.content)
    records = [line["record"] for line in lines]
    assert records[0] == "export"
    assert records[1] == "profile"
    assert records[-1] == "end"
    head = lines[0]
    assert (head["customer_id"], head["requested_id"], head["merged"]) == (ada, phone, True)
    assert head["merged_ids"] == [phone]
    profile = lines[1]
    assert profile["traits"] == {"name": "Ada", "email": ADA_EMAIL}
    assert profile["event_count"] == 4
    identities = {(i["kind"], i["value"]) for i in lines if i["record"] == "identity"}
    assert identities == {
        ("anonymous_id", "anon-ada-laptop"),
        ("anonymous_id", "anon-ada-phone"),
        ("user_id", "user-ada-1815"),
        ("email", ADA_EMAIL),
    }
    events = [line for line in lines if line["record"] == "event"]
    assert [e["event"] for e in events] == [
        "Order Completed",
        None,
        "Article Read",
        "Product Viewed",
    ]  # newest first, every field of each
    identify = events[1]
    assert identify["type"] == "identify"
    assert identify["traits"]["email"] == ADA_EMAIL
    assert {"message_id", "source_id", "context", "properties", "flags", "stored_at"} <= set(
        identify
    )
    merges = [line for line in lines if line["record"] == "merge"]
    assert [(m["survivor_id"], m["merged_id"]) for m in merges] == [(ada, phone)]
    transitions = [line for line in lines if line["record"] == "stage_transition"]
    assert [t["to_stage"] for t in transitions][-1] == "purchase"
    (dead,) = [line for line in lines if line["record"] == "dead_letter"]
    assert base64.b64decode(dead["payload_base64"]) == letter
    assert base64.b64decode(dead["key_base64"]) == b"anon-x"
    assert (dead["topic"], dead["offset"], dead["reason"]) == ("t", 1, "r")
    assert lines[-1]["counts"] == {
        "profile": 1,
        "identity": 4,
        "merge": 1,
        "stage_transition": len(transitions),
        "event": 4,
        "dead_letter": 1,
    }
    # Nothing of Grace's: not her ids, her customer id, nor her order.
    grace = await _id_of(app_client, read_token, "anonymous_id", "anon-grace-1906")
    for value in (*GRACE_IDS, grace, "GRACE-ONLY-COUPON"):
        assert value.encode() not in response.content


async def test_export_and_erasure_need_an_admin_token(
    app_client: httpx.AsyncClient,
    admin_token: str,
    read_token: str,
    write_key: str,
    handle: Any,
    source_id: uuid.UUID,
) -> None:
    ada, _ = await _two_people(handle, source_id, app_client, read_token)
    for method, path in (
        ("GET", f"/v1/customers/{ada}/export"),
        ("DELETE", f"/v1/customers/{ada}"),
    ):
        refused = await app_client.request(method, path, headers=bearer(read_token))
        assert refused.status_code == 403, refused.text
        assert "scope (read)" in refused.json()["detail"]
        as_key = await app_client.request(method, path, headers=bearer(write_key))
        assert as_key.status_code == 403
        assert (await app_client.request(method, path, headers=basic(write_key))).status_code == 401
        assert (await app_client.request(method, path)).status_code == 401
    unknown = uuid.uuid4()
    for method, path in (
        ("GET", f"/v1/customers/{unknown}/export"),
        ("DELETE", f"/v1/customers/{unknown}"),
    ):
        missing = await app_client.request(method, path, headers=bearer(admin_token))
        assert missing.status_code == 404, missing.text
    # Nothing was erased by the refused requests.
    assert (await app_client.get(f"/v1/customers/{ada}", headers=bearer(read_token))).is_success


async def _rows_of(db: AsyncEngine, customers: list[str]) -> dict[str, int]:
    """Rows that name any of the customers, per table."""
    counts = {}
    for table, where in (
        ("customers", "id = ANY(:ids) OR merged_into = ANY(:ids)"),
        ("identities", "customer_id = ANY(:ids)"),
        ("events", "customer_id = ANY(:ids)"),
        ("stage_transitions", "customer_id = ANY(:ids)"),
        ("merges", "survivor_id = ANY(:ids) OR merged_id = ANY(:ids)"),
    ):
        counts[table] = await scalar(
            db,
            f"SELECT count(*) FROM {table} WHERE {where}",
            {"ids": [uuid.UUID(c) for c in customers]},
        )
    return counts


async def _dump(db: AsyncEngine, table: str) -> str:
    async with db.connect() as conn:
        rows = await conn.execute(text(f"SELECT row_to_json(t)::text FROM {table} t"))
        return "\n".join(r[0] for r in rows)


async def test_erasure_removes_the_customer_and_those_merged_into_it_and_keeps_an_audit(
    app_client: httpx.AsyncClient,
    admin_token: str,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    ada, phone = await _two_people(handle, source_id, app_client, read_token)
    grace = await _id_of(app_client, read_token, "anonymous_id", "anon-grace-1906")
    # Letters of Ada's: one holding her email (as sent), one an unreadable message under
    # her anonymous id's key; and one of someone else's.
    async with db.begin() as conn:
        await conn.execute(
            text(
                'INSERT INTO dead_letters (topic, partition, "offset", item, key, payload,'
                " reason) VALUES ('t', 0, 1, -1, 'anon-x', :ada, 'r'), ('t', 0, 2, -1, NULL,"
                " :other, 'r'), ('t', 0, 3, -1, 'ANON-ADA-LAPTOP', :unreadable, 'r')"
            ),
            {
                "ada": b'{"traits": {"email": "Ada.Lovelace@Example.com"}, "x": "\xff"}',
                "other": b'{"traits": {"email": "someone@example.com"}}',
                "unreadable": b"\x00\xfe{not json",
            },
        )
    grace_before = await _rows_of(db, [grace])
    assert (await _rows_of(db, [ada, phone]))["events"] == 4

    response = await app_client.delete(f"/v1/customers/{ada}", headers=bearer(admin_token))
    assert response.status_code == 200, response.text
    erased = response.json()
    assert (erased["customer_id"], erased["requested_id"], erased["suppress"]) == (ada, ada, True)
    counts = erased["counts"]
    assert counts["customers"] == 2
    assert counts["events"] == 4
    assert counts["identities"] == 4
    assert counts["merges"] == 1
    assert counts["dead_letters"] == 2
    assert counts["suppressed"] == 4
    assert counts["stage_transitions"] >= 2

    assert set((await _rows_of(db, [ada, phone])).values()) == {0}
    assert await _rows_of(db, [grace]) == grace_before  # someone else's: untouched
    assert await scalar(db, "SELECT count(*) FROM dead_letters") == 1
    for kind, value in (
        ("anonymous_id", "anon-ada-laptop"),
        ("anonymous_id", "anon-ada-phone"),
        ("user_id", "user-ada-1815"),
        ("email", ADA_EMAIL),
    ):
        assert await profile_of(app_client, read_token, kind, value) is None
    # The audit and the suppression list hold ids, times, counts: no identifier of Ada's.
    kept = "\n".join([await _dump(db, t) for t in ("erasures", "erased_customers", "suppressions")])
    assert ada in kept
    assert phone in kept
    for value in (*ADA_IDS, "Ada", "lovelace"):
        assert value.lower() not in kept.lower()
    token_id = await scalar(db, "SELECT id::text FROM api_tokens WHERE name = 'dpo'")
    assert await scalar(db, "SELECT token_id::text FROM erasures") == token_id
    assert await scalar(db, "SELECT count(*) FROM suppressions WHERE reason = 'erasure'") == 4

    # Idempotent: again, or by the id merged into it, the same record; unknown ids 404.
    for again in (ada, phone):
        repeat = await app_client.delete(f"/v1/customers/{again}", headers=bearer(admin_token))
        assert repeat.status_code == 200
        assert repeat.json() == erased
    assert await scalar(db, "SELECT count(*) FROM erasures") == 1
    gone = await app_client.get(f"/v1/customers/{ada}/export", headers=bearer(admin_token))
    assert gone.status_code == 404

    # The CRM changes feed says both ids were erased, and nothing more of them.
    async def erased_in_feed() -> list[dict[str, Any]]:
        page = await app_client.get("/v1/contacts/changes", headers=bearer(read_token))
        return [i for i in page.json()["items"] if i["erased"]]

    items = await wait_until(erased_in_feed)
    assert sorted(i["customer_id"] for i in items) == sorted([ada, phone])
    assert all(i["identities"] == [] and i["traits"] == {} for i in items)


async def test_erasure_without_suppression_lets_a_later_event_start_a_new_profile(
    app_client: httpx.AsyncClient,
    admin_token: str,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    ada, _ = await _two_people(handle, source_id, app_client, read_token)
    response = await app_client.delete(
        f"/v1/customers/{ada}", params={"suppress": "false"}, headers=bearer(admin_token)
    )
    assert response.status_code == 200
    assert response.json()["suppress"] is False
    assert response.json()["counts"]["suppressed"] == 0
    assert await scalar(db, "SELECT count(*) FROM suppressions") == 0
    later = await handle([touchpoint(source_id, user_id="user-ada-1815", at=100)])
    assert (later.stored, later.suppressed) == (1, 0)
    assert await _id_of(app_client, read_token, "user_id", "user-ada-1815") != ada


async def test_an_erasure_that_waits_too_long_for_a_customer_row_answers_503_and_changes_nothing(
    app_client: httpx.AsyncClient,
    admin_token: str,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`percorso journey rebuild` locks batches of customer rows without the writers' lock:
    an erasure waiting on one of them gives up as it does on the writers' lock."""
    ada, _ = await _two_people(handle, source_id, app_client, read_token)
    monkeypatch.setattr(locks, "ADMIN_LOCK_TIMEOUT", "200ms")
    async with db.connect() as rebuild:
        await rebuild.execute(text("BEGIN"))
        await rebuild.execute(
            text("SELECT id FROM customers WHERE id = :id FOR UPDATE"), {"id": uuid.UUID(ada)}
        )
        response = await app_client.delete(f"/v1/customers/{ada}", headers=bearer(admin_token))
        await rebuild.execute(text("ROLLBACK"))
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
    assert (await _rows_of(db, [ada]))["events"] == 4  # rolled back whole
    assert await scalar(db, "SELECT count(*) FROM erasures") == 0
    assert await scalar(db, "SELECT count(*) FROM dead_letters") == 0
    assert (await app_client.get(f"/v1/customers/{ada}", headers=bearer(read_token))).is_success
    done = await app_client.delete(f"/v1/customers/{ada}", headers=bearer(admin_token))
    assert done.status_code == 200  # once the rebuild let go


async def test_erasure_takes_the_persons_identifiers_off_other_customers_merges(
    app_client: httpx.AsyncClient,
    admin_token: str,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    """A shared device: Bob's event carries Ada's email, which merge protection keeps from
    linking her (she has a user id of her own), and merges Bob's two customers. The merge
    stays Bob's; Ada's email goes from it, and so from Bob's export."""
    await handle(
        [
            touchpoint(source_id, user_id="u-ada", extra_ids=[("email", ADA_EMAIL)], at=0),
            touchpoint(source_id, user_id="u-bob", anonymous_id="bob-laptop", at=1),
            touchpoint(source_id, anonymous_id="bob-tablet", at=2),
        ]
    )
    await handle(
        [
            touchpoint(
                source_id,
                user_id="u-bob",
                anonymous_id="bob-tablet",
                extra_ids=[("email", ADA_EMAIL)],
                at=3,
            )
        ]
    )
    ada = await _id_of(app_client, read_token, "email", ADA_EMAIL)
    bob = await _id_of(app_client, read_token, "user_id", "u-bob")
    assert ada != bob
    assert await scalar(db, "SELECT count(*) FROM merges WHERE identifiers::text LIKE '%ada%'") == 1

    erased = await app_client.delete(f"/v1/customers/{ada}", headers=bearer(admin_token))
    assert erased.status_code == 200, erased.text
    kept = await _dump(db, "merges")
    assert ADA_EMAIL not in kept
    assert await scalar(db, "SELECT identifiers FROM merges") == [
        {"kind": "user_id", "value": "u-bob"},
        {"kind": "anonymous_id", "value": "bob-tablet"},
    ]
    export = await app_client.get(f"/v1/customers/{bob}/export", headers=bearer(admin_token))
    assert export.status_code == 200
    assert [line["record"] for line in _lines(export.content)].count("merge") == 1
    assert ADA_EMAIL.encode() not in export.content


# A customer with this many events of about 1 KB each: more than the sockets between a
# client and the API buffer, so a client that stops reading leaves the API waiting to send.
_MANY_EVENTS = """
    WITH customer AS (
        INSERT INTO customers (id, first_seen_at, last_seen_at, event_count)
        VALUES (:customer, now(), now(), 20000) RETURNING id
    )
    INSERT INTO events (event_id, source_id, message_id, customer_id, type, event, channel,
                        occurred_at, received_at, properties, traits, context)
    SELECT gen_random_uuid(), :source, 'm-' || n, customer.id, 'track', 'Product Viewed',
           'web', now() - n * interval '1 second', now(),
           jsonb_build_object('sku', 'SKU-' || n, 'description', repeat('x', 900)), '{}', '{}'
    FROM customer, generate_series(1, 20000) AS n
"""


async def test_an_export_its_client_stops_reading_ends_at_the_time_limit(
    settings: Settings,
    admin_token: str,
    source_id: uuid.UUID,
    db: AsyncEngine,
    tmp_path: Path,
) -> None:
    """The export's transaction holds a snapshot (VACUUM cleans up nothing behind it) and a
    connection of the API's pool: a client that stops reading must not hold them for ever."""
    customer = uuid.uuid4()
    async with db.begin() as conn:
        await conn.execute(text(_MANY_EVENTS), {"customer": customer, "source": source_id})
    in_transaction = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'percorso-api'"
        " AND datname = current_database() AND xact_start IS NOT NULL"
    )
    async with api_process(settings, tmp_path / "api.log", PERCORSO_EXPORT_TIMEOUT_S="2") as port:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.sendall(
                f"GET /v1/customers/{customer}/export HTTP/1.1\r\nHost: percorso\r\n"
                f"Authorization: Bearer {admin_token}\r\n\r\n".encode()
            )
            assert sock.recv(12) == b"HTTP/1.1 200"
            await asyncio.sleep(1)
            assert await scalar(db, in_transaction) == 1  # the export, waiting to send
            await wait_until(lambda: _none(db, in_transaction), timeout=5)
            # Cut: the answer ends without its last chunk, and the connection is closed.
            received = b""
            while chunk := sock.recv(1 << 16):
                received += chunk
            assert not received.endswith(b"\r\n0\r\n\r\n")
            assert b'"record":"end"' not in received


async def _none(db: AsyncEngine, query: str) -> bool:
    return await scalar(db, query) == 0
