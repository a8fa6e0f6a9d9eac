"""Stored source settings that no longer read (edited by hand, or a rule tightened since)
hold the source to the safe side, field by field, instead of falling back to "any origin"."""

from __future__ import annotations

import logging
import uuid

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.ingest import source_settings
from tests.helpers import basic
from tests.ingest.fixtures import SourceFactory, asgi_client

EVENT = {"userId": "ada", "event": "E"}
SHOP = "https://shop.example"


async def _store(db: AsyncEngine, source_id: uuid.UUID, settings: object) -> None:
    """Overwrite a source's settings as an operator's hand edit would, unchecked."""
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE sources SET settings = CAST(:settings AS jsonb) WHERE id = :id"),
            {"settings": orjson.dumps(settings).decode(), "id": source_id},
        )


@pytest.mark.parametrize(
    "stored",
    [
        {"allowed_origins": "not a list"},
        {"allowed_origins": ["ftp://x"], "rate_limit_per_s": 1000},
        {"allowed_origins": [SHOP, "https://shop.example/cart"]},
        ["not", "an", "object"],
    ],
    ids=["not-a-list", "ftp", "one-bad-origin", "not-an-object"],
)
async def test_an_unreadable_allowed_origins_refuses_browsers_and_admits_servers(
    channel_settings: Settings,
    db: AsyncEngine,
    make_source: SourceFactory,
    caplog: pytest.LogCaptureFixture,
    stored: object,
) -> None:
    source, key = await make_source(settings={"allowed_origins": [SHOP]})
    await _store(db, source.id, stored)
    # Credentials cached as in production (the test settings cache none).
    cached = channel_settings.model_copy(update={"auth_cache_ttl_s": 300.0})
    with caplog.at_level(logging.WARNING, logger="app.auth.service"):
        async with asgi_client(cached) as client:
            # The preflight carries no write key: it cannot tell the source, and passes as
            # for any source.
            preflight = await client.options(
                "/v1/t",
                headers={
                    "origin": SHOP,
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "authorization, content-type",
                },
            )
            browser = await client.post("/v1/t", json=EVENT, headers={**basic(key), "origin": SHOP})
            # The settings document analytics.js loads is refused the same way.
            document = await client.get(f"/v1/projects/{key}/settings", headers={"origin": SHOP})
            server = await client.post("/v1/track", json=EVENT, headers=basic(key))
            server_document = await client.get(f"/v1/projects/{key}/settings")

    assert preflight.status_code == 204
    # The request the preflight let through is refused with no CORS grant, as any refused
    # origin is: the page cannot read the answer as an acceptance.
    for refused in (browser, document):
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert "access-control-allow-origin" not in refused.headers
        detail = refused.json()["detail"]
        assert "stored allowed_origins setting is invalid" in detail
        assert key not in detail
        for stored_value in ("ftp://x", "not a list", "cart"):
            assert stored_value not in detail
    assert server.status_code == 200
    assert server_document.status_code == 200

    # Once per load into the credential cache (four requests, one load), naming the
    # source by its id, never its key.
    warnings = [r for r in caplog.records if r.name == "app.auth.service"]
    assert len(warnings) == 1
    assert str(source.id) in warnings[0].getMessage()
    assert "allowed_origins" in warnings[0].getMessage()
    assert key not in caplog.text


async def test_an_unreadable_rate_limit_gives_the_default_rate_and_keeps_the_origins(
    channel_settings: Settings, db: AsyncEngine, make_source: SourceFactory
) -> None:
    source, key = await make_source(settings={"allowed_origins": [SHOP]})
    await _store(db, source.id, {"allowed_origins": [SHOP], "rate_limit_per_s": "fast"})
    # A default of 1 event/s (bursts of 1 s): a second event at once is beyond it.
    slow_default = channel_settings.model_copy(
        update={"ingest_rate_limit_per_s": 1, "ingest_rate_burst_s": 1}
    )
    async with asgi_client(slow_default) as client:
        evil = await client.post(
            "/v1/t", json=EVENT, headers={**basic(key), "origin": "https://evil.example"}
        )
        assert evil.status_code == 403
        assert "https://evil.example is not allowed" in evil.json()["detail"]
        shop = await client.post("/v1/t", json=EVENT, headers={**basic(key), "origin": SHOP})
        assert shop.status_code == 200
        assert shop.headers["access-control-allow-origin"] == SHOP
        limited = await client.post("/v1/t", json=EVENT, headers={**basic(key), "origin": SHOP})
    assert limited.status_code == 429
    assert limited.json()["detail"].startswith("this source may send 1 events per second")


async def test_settings_fixed_in_the_database_apply_once_the_source_is_loaded_again(
    client: httpx.AsyncClient, db: AsyncEngine, make_source: SourceFactory
) -> None:
    # The test settings cache no credential: each request loads the source afresh.
    source, key = await make_source()
    await _store(db, source.id, {"allowed_origins": "not a list"})
    headers = {**basic(key), "origin": SHOP}
    assert (await client.post("/v1/t", json=EVENT, headers=headers)).status_code == 403
    await _store(db, source.id, {"allowed_origins": [SHOP]})
    assert (await client.post("/v1/t", json=EVENT, headers=headers)).status_code == 200


def test_each_field_reads_on_its_own() -> None:
    policy = source_settings.parse({"allowed_origins": [SHOP], "rate_limit_per_s": -1})
    assert policy.allows_origin(SHOP)
    assert not policy.allows_origin("https://evil.example")
    assert policy.rate_limit_per_s is None  # the default rate
    assert policy.invalid == ("rate_limit_per_s: Input should be greater than 0",)

    closed = source_settings.parse({"allowed_origins": 5, "rate_limit_per_s": 7, "mine": 1})
    assert closed.origins_invalid
    assert not closed.allows_origin(SHOP)
    assert closed.rate_limit_per_s == 7
    assert [line.split(":")[0] for line in closed.invalid] == ["allowed_origins"]

    for not_an_object in ([], "", 0, [SHOP]):
        assert not source_settings.parse(not_an_object).allows_origin(SHOP)
    # What reads is as before: absent, null, empty or "*" is any origin.
    for readable in ({}, None, {"allowed_origins": None}, {"allowed_origins": ["*"]}):
        assert source_settings.parse(readable).allows_origin("https://anywhere.example")


def test_a_long_stored_value_is_quoted_shortened_in_the_log_line() -> None:
    policy = source_settings.parse({"allowed_origins": ["ftp://" + "x" * 10_000]})
    assert policy.origins_invalid
    assert len(policy.invalid[0]) < 300
