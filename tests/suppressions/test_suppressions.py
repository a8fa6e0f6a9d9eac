"""The suppression list: its API, and what the pipeline and the contacts API do with it."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit.metrics import PIPELINE_EVENTS
from app.pipeline.runner import Pipeline
from tests.factories import touchpoint
from tests.helpers import basic, bearer, profile_of, scalar, wait_until

ADA = {"kind": "email", "value": "  Ada@Example.COM "}


def _digest(kind: str, value: str) -> bytes:
    return hashlib.sha256(f"{kind}:{value}".encode()).digest()


async def test_an_identifier_is_suppressed_normalised_and_hashed_and_lifted_again(
    app_client: httpx.AsyncClient, admin_token: str, db: AsyncEngine
) -> None:
    first = await app_client.post("/v1/suppressions", json=ADA, headers=bearer(admin_token))
    assert first.status_code == 201, first.text
    assert first.json()["kind"] == "email"
    assert first.json()["reason"] == "request"
    again = await app_client.post(
        "/v1/suppressions",
        json={"kind": "Email", "value": "ada@example.com"},
        headers=bearer(admin_token),
    )
    assert again.status_code == 200
    assert again.json() == first.json()
    # Only the hash of the normalised identifier is kept.
    stored = await scalar(db, "SELECT digest FROM suppressions")
    assert bytes(stored) == _digest("email", "ada@example.com")
    assert await scalar(db, "SELECT count(*) FROM suppressions") == 1

    lifted = await app_client.request(
        "DELETE", "/v1/suppressions", json=ADA, headers=bearer(admin_token)
    )
    assert lifted.status_code == 204
    assert await scalar(db, "SELECT count(*) FROM suppressions") == 0
    missing = await app_client.request(
        "DELETE", "/v1/suppressions", json=ADA, headers=bearer(admin_token)
    )
    assert missing.status_code == 404


async def test_suppression_requests_are_checked_and_need_an_admin_token(
    app_client: httpx.AsyncClient, admin_token: str, read_token: str, write_key: str
) -> None:
    for body, field in (
        ({"kind": "email", "value": "not-an-email"}, "value"),
        ({"kind": "user_id", "value": "undefined"}, "value"),
        ({"kind": "bad kind!", "value": "x"}, "kind"),
        ({"kind": "email"}, "value"),
        ({"kind": "email", "value": "a@example.com", "extra": 1}, "extra"),
        ({"kind": "email", "value": "x" * 300}, "value"),
    ):
        refused = await app_client.post("/v1/suppressions", json=body, headers=bearer(admin_token))
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["errors"][0]["field"] == field
    large = await app_client.post(
        "/v1/suppressions",
        content=b'{"kind": "email", "value": "' + b"a" * 5000 + b'"}',
        headers={**bearer(admin_token), "content-type": "application/json"},
    )
    assert large.status_code == 400
    for method in ("POST", "DELETE"):
        as_reader = await app_client.request(
            method, "/v1/suppressions", json=ADA, headers=bearer(read_token)
        )
        assert as_reader.status_code == 403
        as_key = await app_client.request(
            method, "/v1/suppressions", json=ADA, headers=basic(write_key)
        )
        assert as_key.status_code == 401


async def test_the_pipeline_drops_events_of_suppressed_identifiers_and_counts_them(
    app_client: httpx.AsyncClient,
    admin_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    assert (
        await app_client.post("/v1/suppressions", json=ADA, headers=bearer(admin_token))
    ).status_code == 201
    suppressed = PIPELINE_EVENTS.labels("suppressed")
    before = suppressed._value.get()

    def batch(tag: str) -> list[Any]:
        return [
            touchpoint(
                source_id, anonymous_id=f"{tag}-a", extra_ids=[("email", "ada@example.com")]
            ),
            touchpoint(source_id, anonymous_id=f"{tag}-b", at=1),
            touchpoint(
                source_id, anonymous_id=f"{tag}-b", at=2, extra_ids=[("email", "ada@example.com")]
            ),
        ]

    # The first batch finds the list not empty; the second asks in its dedupe statement.
    for tag in ("first", "second"):
        outcome = await handle(batch(tag))
        assert (outcome.stored, outcome.suppressed, outcome.duplicates) == (1, 2, 0)
        assert outcome.dead_letters == []
    assert suppressed._value.get() == before + 4
    assert await scalar(db, "SELECT count(*) FROM events") == 2
    assert await scalar(db, "SELECT count(*) FROM identities WHERE kind = 'email'") == 0
    assert await scalar(db, "SELECT count(*) FROM dead_letters") == 0


async def test_a_suppressed_contact_is_refused_with_its_field_named(
    app_client: httpx.AsyncClient, admin_token: str, write_key: str
) -> None:
    await app_client.post("/v1/suppressions", json=ADA, headers=bearer(admin_token))
    await app_client.post(
        "/v1/suppressions",
        json={"kind": "loyalty card", "value": "LC-9"},
        headers=bearer(admin_token),
    )
    response = await app_client.post(
        "/v1/contacts",
        json={
            "contacts": [
                {"crm_id": "CRM-1", "email": "ADA@example.com"},
                {"crm_id": "CRM-2", "email": "grace@example.com"},
                {"crm_id": "CRM-3", "external_ids": [{"id": "LC-9", "type": "loyalty_card"}]},
            ]
        },
        headers=basic(write_key),
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 2)
    verdicts = answer["results"]
    assert [v["status"] for v in verdicts] == ["rejected", "accepted", "rejected"]
    assert [e["field"] for e in verdicts[0]["errors"]] == ["email"]
    assert "suppressed" in verdicts[0]["errors"][0]["message"]
    assert [e["field"] for e in verdicts[2]["errors"]] == ["external_ids"]
    alone = await app_client.post(
        "/v1/contacts",
        json={"contacts": [{"email": "ada@example.com"}]},
        headers=basic(write_key),
    )
    assert alone.status_code == 400  # nothing left to store


async def _profile_of(client: httpx.AsyncClient, token: str, email: str) -> dict[str, Any] | None:
    return await profile_of(client, token, "email", email)


async def test_after_erasure_the_consumer_drops_the_erased_email_until_it_is_unsuppressed(
    app_client: httpx.AsyncClient,
    write_key: str,
    read_token: str,
    admin_token: str,
    db: AsyncEngine,
    pipeline: Pipeline,
) -> None:
    """Over the broker, through the running consumer."""
    ada = "ada.erased@example.com"
    sent = await app_client.post(
        "/v1/identify",
        json={"anonymousId": "anon-before", "traits": {"email": ada}},
        headers=basic(write_key),
    )
    assert sent.status_code == 200
    profile = await wait_until(lambda: _profile_of(app_client, read_token, ada))
    erased = await app_client.delete(f"/v1/customers/{profile['id']}", headers=bearer(admin_token))
    assert erased.status_code == 200

    suppressed = PIPELINE_EVENTS.labels("suppressed")
    before = suppressed._value.get()
    sent = await app_client.post(
        "/v1/track",
        json={"anonymousId": "anon-after", "event": "Product Viewed",
              "context": {"traits": {"email": " Ada.Erased@Example.com"}}},
        headers=basic(write_key),
    )  # fmt: skip
    assert sent.status_code == 200  # the API accepts it: the pipeline drops it
    await wait_until(lambda: _counted(suppressed, before + 1))
    assert await _profile_of(app_client, read_token, ada) is None
    assert await scalar(db, "SELECT count(*) FROM events") == 0
    # Not kept as a dead letter either (the session's consumer may dead-letter an earlier
    # test's stragglers, whose source is gone: those are not this one's).
    letters = "SELECT count(*) FROM dead_letters WHERE encode(payload, 'escape') ILIKE :v"
    assert await scalar(db, letters, {"v": "%ada.erased%"}) == 0

    lifted = await app_client.request(
        "DELETE", "/v1/suppressions", json={"kind": "email", "value": ada},
        headers=bearer(admin_token),
    )  # fmt: skip
    assert lifted.status_code == 204
    sent = await app_client.post(
        "/v1/track",
        json={"anonymousId": "anon-again", "event": "Signed Up",
              "context": {"traits": {"email": ada}}},
        headers=basic(write_key),
    )  # fmt: skip
    assert sent.status_code == 200
    profile = await wait_until(lambda: _profile_of(app_client, read_token, ada))
    assert profile["event_count"] == 1
    assert suppressed._value.get() == before + 1


async def _counted(counter: Any, value: float) -> bool:
    return bool(counter._value.get() >= value)


async def test_erasure_beside_a_consumer_storing_the_same_person_ends_consistent(
    app_client: httpx.AsyncClient,
    admin_token: str,
    read_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    """Batches for one person keep arriving while she is erased: nothing deadlocks, every
    event was either stored and then erased or dropped as suppressed, and nothing of her is
    left (each event carries her email, which the erasure suppressed)."""
    email = "busy@example.com"

    def batch(n: int) -> list[Any]:
        return [
            touchpoint(
                source_id,
                anonymous_id=f"dev-{n}-{i}",
                extra_ids=[("email", email)],
                event="Product Viewed",
                at=n * 100 + i,
            )
            for i in range(40)
        ]

    first = await handle(batch(0))
    profile = await _profile_of(app_client, read_token, email)
    assert profile is not None
    outcomes = [first]
    erasures: list[dict[str, Any]] = []

    async def feed() -> None:
        for n in range(1, 16):
            outcomes.append(await handle(batch(n)))

    async def erase() -> None:
        await asyncio.sleep(0.05)  # some batches in flight
        response = await app_client.delete(
            f"/v1/customers/{profile['id']}", headers=bearer(admin_token)
        )
        assert response.status_code == 200, response.text
        erasures.append(response.json())

    await asyncio.wait_for(asyncio.gather(feed(), erase()), 60)
    stored = sum(o.stored for o in outcomes)
    dropped = sum(o.suppressed for o in outcomes)
    assert stored + dropped == 16 * 40
    assert dropped > 0  # some came after the erasure
    assert erasures[0]["counts"]["events"] == stored  # the rest were stored, then erased
    for table in ("events", "customers", "identities", "stage_transitions", "merges"):
        assert await scalar(db, f"SELECT count(*) FROM {table}") == 0, table


async def test_an_alias_from_a_suppressed_user_id_is_dropped(
    app_client: httpx.AsyncClient,
    admin_token: str,
    handle: Any,
    source_id: uuid.UUID,
    db: AsyncEngine,
) -> None:
    """A server aliases an old user id to a new one (`previousId` is recorded as an
    anonymous id): when the old one is suppressed, the call is the erased person's."""
    suppressed = await app_client.post(
        "/v1/suppressions",
        json={"kind": "user_id", "value": "ada-1815"},
        headers=bearer(admin_token),
    )
    assert suppressed.status_code == 201

    def alias(at: int) -> Any:
        return touchpoint(
            source_id,
            type="alias",
            event=None,
            user_id="ada-new",
            extra_ids=[("anonymous_id", "ada-1815")],
            properties={"previousId": "ada-1815"},
            at=at,
        )

    # Once as the list's first look finds it, once as the dedupe statement asks.
    for at in (0, 1):
        outcome = await handle([alias(at)])
        assert (outcome.stored, outcome.suppressed) == (0, 1)
    assert await scalar(db, "SELECT count(*) FROM identities") == 0
    # Only an alias's previous id reads as a user id: an anonymous id is its own kind.
    other = await handle([touchpoint(source_id, anonymous_id="ada-1815", at=2)])
    assert (other.stored, other.suppressed) == (1, 0)
