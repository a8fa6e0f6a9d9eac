"""`percorso sources set`: a source's tracking settings changed in place, end to end: the
command against the real database, then the API holding browsers and rates to the new
settings once its credential cache lets go of the old ones."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.config import Settings
from tests.auth.commands import create_source, run, table
from tests.helpers import basic, scalar
from tests.ingest.fixtures import asgi_client

EVENT = {"userId": "ada", "event": "Product Viewed"}
SHOP = "https://shop.example"
NEW = "https://new.example"
CACHED = "up to 45 s (PERCORSO_AUTH_CACHE_TTL_S, its credential cache)"


async def _browser(client: httpx.AsyncClient, key: str, origin: str) -> int:
    """The status a browser at ``origin`` gets for an event sent with ``key``."""
    headers = {**basic(key), "origin": origin}
    return (await client.post("/v1/t", json=EVENT, headers=headers)).status_code


async def _stored(db: AsyncEngine, name: str = "website") -> Any:
    return await scalar(db, "SELECT settings FROM sources WHERE name = :name", {"name": name})


async def _store(db: AsyncEngine, settings: object, name: str = "website") -> None:
    """Overwrite a source's settings as a hand edit would, unchecked."""
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE sources SET settings = CAST(:settings AS jsonb) WHERE name = :name"),
            {"settings": orjson.dumps(settings).decode(), "name": name},
        )


def _cached_for(settings: Settings, ttl_s: float) -> Settings:
    return settings.model_copy(update={"auth_cache_ttl_s": ttl_s})


async def test_new_allowed_origins_apply_to_browsers_once_the_cache_delay_passes(
    percorso: CliRunner, channel_settings: Settings, db: AsyncEngine
) -> None:
    key = await create_source(percorso, "website", "--allowed-origin", SHOP)
    ttl_s = 1.0
    async with (
        asgi_client(_cached_for(channel_settings, 300)) as long_cache,
        asgi_client(_cached_for(channel_settings, ttl_s)) as short_cache,
    ):
        for api in (long_cache, short_cache):  # each loads the source into its cache
            assert await _browser(api, key, SHOP) == 200
            assert await _browser(api, key, NEW) == 403

        result = await run(
            percorso,
            *("sources", "set", "website", "--allowed-origin", NEW),
            *("--allowed-origin", "https://Second.Example:443/"),
        )
        changed = time.monotonic()
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        assert await _stored(db) == {"allowed_origins": [NEW, "https://second.example"]}
        assert "allowed origins: https://new.example, https://second.example;" in result.stdout
        assert "rate limit: default, 1000/s (PERCORSO_INGEST_RATE_LIMIT_PER_S)" in result.stdout
        assert f"keeps applying its old settings for {CACHED}" in result.stdout

        # What the command says: an API that loaded the source keeps its old settings for as
        # long as it caches the credential...
        assert await _browser(long_cache, key, SHOP) == 200
        assert await _browser(long_cache, key, NEW) == 403
        # ...and holds browsers to the new ones once that has passed.
        while await _browser(short_cache, key, NEW) != 200:
            assert time.monotonic() - changed < ttl_s + 1, "the new origin is still refused"
            await asyncio.sleep(0.05)
        assert await _browser(short_cache, key, SHOP) == 403
        assert await _browser(short_cache, key, "https://second.example") == 200
        server = await short_cache.post("/v1/track", json=EVENT, headers=basic(key))
        assert server.status_code == 200  # no Origin: never checked


async def test_any_origin_again_and_a_rate_set_then_back_to_the_default_keep_other_keys(
    percorso: CliRunner, channel_settings: Settings, db: AsyncEngine
) -> None:
    key = await create_source(percorso, "website", "--allowed-origin", SHOP, "--rate-limit", "500")
    # A key another feature stores in the same document.
    theirs = {"consent": {"banner": True}}
    await _store(db, {**await _stored(db), **theirs})

    # One event per second, in bursts of one: a second event at once is beyond it.
    slow = await run(percorso, "sources", "set", "website", "--rate-limit", "1")
    assert slow.exit_code == 0, slow.output
    assert await _stored(db) == {"allowed_origins": [SHOP], "rate_limit_per_s": 1, **theirs}
    assert f"allowed origins: {SHOP}; rate limit: 1/s" in slow.stdout
    burst_1s = channel_settings.model_copy(update={"ingest_rate_burst_s": 1})
    async with asgi_client(burst_1s) as api:
        assert await _browser(api, key, SHOP) == 200
        limited = await api.post("/v1/t", json=EVENT, headers={**basic(key), "origin": SHOP})
        assert limited.status_code == 429
        assert limited.json()["detail"].startswith("this source may send 1 events per second")

    default = await run(percorso, "sources", "set", "website", "--default-rate-limit")
    assert default.exit_code == 0, default.output
    assert await _stored(db) == {"allowed_origins": [SHOP], **theirs}
    assert "rate limit: default, 1000/s (PERCORSO_INGEST_RATE_LIMIT_PER_S)" in default.stdout
    async with asgi_client(burst_1s) as api:
        statuses = [await _browser(api, key, SHOP) for _ in range(5)]
        assert statuses == [200] * 5
        assert await _browser(api, key, "https://evil.example") == 403

    anywhere = await run(percorso, "sources", "set", "website", "--any-origin")
    assert anywhere.exit_code == 0, anywhere.output
    assert await _stored(db) == theirs
    assert "allowed origins: any; rate limit: default" in anywhere.stdout
    async with asgi_client(channel_settings) as api:
        assert await _browser(api, key, "https://evil.example") == 200

    # Both at once, in one command.
    both = await run(
        percorso, "sources", "set", "website", "--allowed-origin", NEW, "--rate-limit", "20"
    )
    assert both.exit_code == 0, both.output
    assert await _stored(db) == {"allowed_origins": [NEW], "rate_limit_per_s": 20, **theirs}
    listed = table((await run(percorso, "sources", "list")).stdout)
    assert (listed[0]["origins"], listed[0]["rate"]) == (NEW, "20/s")


async def test_a_stored_allowed_origins_that_does_not_read_is_fixed_by_setting_it(
    percorso: CliRunner, channel_settings: Settings, db: AsyncEngine
) -> None:
    key = await create_source(percorso, "website", "--allowed-origin", SHOP)
    await _store(db, {"allowed_origins": "not a list", "rate_limit_per_s": "fast", "mine": 1})
    listed = table((await run(percorso, "sources", "list")).stdout)
    assert (listed[0]["origins"], listed[0]["rate"]) == (
        "invalid (browsers refused)",
        "invalid (default)",
    )
    async with asgi_client(channel_settings) as api:
        assert await _browser(api, key, SHOP) == 403

    fixed = await run(percorso, "sources", "set", "website", "--allowed-origin", SHOP)
    assert fixed.exit_code == 0, fixed.output
    # The field set replaces what did not read; the rate, left alone, is kept as stored
    # and the command says it still does not read.
    assert await _stored(db) == {"allowed_origins": [SHOP], "rate_limit_per_s": "fast", "mine": 1}
    assert f"allowed origins: {SHOP}; rate limit: invalid, so the default, 1000/s" in fixed.stdout
    assert fixed.stderr.startswith(
        "warning: the stored rate_limit_per_s, left as it is, still does not read"
    )
    assert "until --rate-limit or --default-rate-limit sets it" in fixed.stderr
    async with asgi_client(channel_settings) as api:
        assert await _browser(api, key, SHOP) == 200
        assert await _browser(api, key, "https://evil.example") == 403

    rate = await run(percorso, "sources", "set", "website", "--default-rate-limit")
    assert rate.exit_code == 0, rate.output
    assert rate.stderr == ""
    assert await _stored(db) == {"allowed_origins": [SHOP], "mine": 1}

    # The rate set alone says that the origins, left as stored, still refuse browsers.
    await _store(db, {"allowed_origins": ["ftp://x"], "mine": 1})
    origins_left = await run(percorso, "sources", "set", "website", "--rate-limit", "5")
    assert origins_left.exit_code == 0, origins_left.output
    assert await _stored(db) == {"allowed_origins": ["ftp://x"], "rate_limit_per_s": 5, "mine": 1}
    assert "warning: the stored allowed_origins, left as it is, still does not read" in (
        origins_left.stderr
    )
    assert "every browser is refused until --allowed-origin or --any-origin" in (
        origins_left.stderr
    )
    assert "allowed origins: invalid (browsers refused); rate limit: 5/s" in origins_left.stdout


async def test_settings_that_are_no_json_object_are_replaced_only_with_the_origins_set(
    percorso: CliRunner, db: AsyncEngine
) -> None:
    await create_source(percorso, "website", "--allowed-origin", SHOP)
    await _store(db, ["not", "an", "object"])

    # A new rate alone would leave no allowed_origins, that is any origin: refused.
    rate_only = await run(percorso, "sources", "set", "website", "--rate-limit", "5")
    assert rate_only.exit_code == 2
    assert "error: source 'website''s stored settings are not a JSON object" in rate_only.stderr
    assert "set its allowed origins too" in rate_only.stderr
    assert await _stored(db) == ["not", "an", "object"]

    replaced = await run(
        percorso, "sources", "set", "website", "--allowed-origin", SHOP, "--rate-limit", "5"
    )
    assert replaced.exit_code == 0, replaced.output
    assert await _stored(db) == {"allowed_origins": [SHOP], "rate_limit_per_s": 5}

    # JSON null reads as no settings (any origin), and takes a rate alone.
    await _store(db, None)
    on_null = await run(percorso, "sources", "set", "website", "--rate-limit", "5")
    assert on_null.exit_code == 0, on_null.output
    assert await _stored(db) == {"rate_limit_per_s": 5}


async def test_a_disabled_source_s_settings_are_set_and_it_stays_disabled(
    percorso: CliRunner, db: AsyncEngine
) -> None:
    await create_source(percorso, "website")
    assert (await run(percorso, "sources", "disable", "website")).exit_code == 0
    since = await scalar(db, "SELECT disabled_at FROM sources WHERE name = 'website'")

    result = await run(percorso, "sources", "set", "website", "--allowed-origin", SHOP)
    assert result.exit_code == 0, result.output
    assert "the source stays disabled (`percorso sources enable website`)" in result.stdout
    assert await _stored(db) == {"allowed_origins": [SHOP]}
    assert await scalar(db, "SELECT disabled_at FROM sources WHERE name = 'website'") == since


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((), "error: nothing to set: give --allowed-origin (repeatable) or --any-origin"),
        (
            ("--allowed-origin", NEW, "--any-origin"),
            "error: --allowed-origin and --any-origin contradict each other",
        ),
        (
            ("--rate-limit", "5", "--default-rate-limit"),
            "error: --rate-limit and --default-rate-limit contradict each other",
        ),
    ],
    ids=["nothing", "origins", "rate"],
)
async def test_contradictory_or_no_options_are_a_usage_error(
    percorso: CliRunner, db: AsyncEngine, args: tuple[str, ...], error: str
) -> None:
    await create_source(percorso, "website", "--allowed-origin", SHOP)
    result = await run(percorso, "sources", "set", "website", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(error)
    assert result.stdout == ""
    assert await _stored(db) == {"allowed_origins": [SHOP]}


@pytest.mark.parametrize(
    "args",
    [
        ("--allowed-origin", "ftp://shop.example"),
        ("--allowed-origin", SHOP, "--allowed-origin", "https://shop.example/cart"),
        ("--rate-limit", "0"),
        ("--rate-limit", "2000000"),
    ],
    ids=["scheme", "path", "zero-rate", "rate-too-high"],
)
async def test_values_are_refused_as_create_refuses_them(
    percorso: CliRunner, db: AsyncEngine, args: tuple[str, ...]
) -> None:
    await create_source(percorso, "website", "--allowed-origin", SHOP, "--rate-limit", "50")
    result = await run(percorso, "sources", "set", "website", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid source settings: ")
    created = await run(percorso, "sources", "create", "--name", "other", *args)
    assert created.exit_code == 2
    assert result.stderr == created.stderr
    assert await _stored(db) == {"allowed_origins": [SHOP], "rate_limit_per_s": 50}


async def test_an_unknown_source_is_an_error(percorso: CliRunner, db: AsyncEngine) -> None:
    await create_source(percorso, "website")
    result = await run(percorso, "sources", "set", "websight", "--rate-limit", "5")
    assert result.exit_code == 2
    assert result.stderr == "error: no source named 'websight'\n"
    assert await _stored(db) == {}
