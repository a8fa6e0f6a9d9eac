"""`percorso sources list|disable|enable|rotate-key` and `percorso tokens list|revoke`, end to
end: the command against the real database, then the API refusing what it turned off (the
test settings cache no credential: `auth_cache_ttl_s=0`)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from tests.auth.commands import create_source, run, table
from tests.helpers import basic, bearer, scalar

EVENT = {"userId": "ada", "event": "Product Viewed"}


async def _track(client: httpx.AsyncClient, key: str) -> int:
    return (await client.post("/v1/track", json=EVENT, headers=basic(key))).status_code


async def _read(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get("/v1/journey/model", headers=bearer(token))).status_code


async def _create_source(runner: CliRunner, name: str, channel: str = "web") -> str:
    return await create_source(runner, name, "--channel", channel)


async def test_sources_are_listed_with_their_settings_and_without_their_keys(
    percorso: CliRunner,
) -> None:
    website = await create_source(
        percorso,
        "website",
        *("--allowed-origin", "https://shop.example", "--allowed-origin", "https://b.example"),
        *("--rate-limit", "500"),
    )
    till = await _create_source(percorso, "till-milano", "in_store")
    app = await create_source(percorso, "app", "--allowed-origin", "https://app.example")

    listed = await run(percorso, "sources", "list")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[0].split() == [
        "name", "channel", "write", "key", "origins", "rate", "created", "disabled",
    ]  # fmt: skip
    rows = table(listed.stdout)
    assert [(r["name"], r["channel"], r["write key"], r["origins"], r["rate"]) for r in rows] == [
        ("app", "web", app[:7] + "…", "https://app.example", "default"),
        ("till-milano", "in_store", till[:7] + "…", "any", "default"),
        ("website", "web", website[:7] + "…", "https://shop.example (+1)", "500/s"),
    ]
    assert all(r["disabled"] == "-" for r in rows)
    for key in (website, till, app):
        assert key not in listed.output


async def test_a_disabled_source_s_key_is_refused_until_it_is_enabled_again(
    percorso: CliRunner, app_client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    key = await _create_source(percorso, "website")
    other = await _create_source(percorso, "newsletter", "email")
    assert await _track(app_client, key) == 200

    disabled = await run(percorso, "sources", "disable", "website")
    assert disabled.exit_code == 0, disabled.output
    assert "disabled source 'website'" in disabled.stdout
    assert "up to 45 s (PERCORSO_AUTH_CACHE_TTL_S" in disabled.stdout
    assert await _track(app_client, key) == 401
    assert await _track(app_client, other) == 200
    listed = (await run(percorso, "sources", "list")).stdout.splitlines()
    website = next(row for row in listed if row.startswith("website"))
    assert website.split()[-1].endswith("Z")  # when it was disabled
    since = await scalar(db, "SELECT disabled_at FROM sources WHERE name = 'website'")

    again = await run(percorso, "sources", "disable", "website")
    assert again.exit_code == 0, again.output
    assert await scalar(db, "SELECT disabled_at FROM sources WHERE name = 'website'") == since

    enabled = await run(percorso, "sources", "enable", "website")
    assert enabled.exit_code == 0, enabled.output
    assert "enabled source 'website'" in enabled.stdout
    assert await _track(app_client, key) == 200
    assert await scalar(db, "SELECT disabled_at FROM sources WHERE name = 'website'") is None


async def test_a_rotated_key_replaces_the_old_one_for_the_same_source(
    percorso: CliRunner, app_client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    old = await _create_source(percorso, "website")
    source_id = await scalar(db, "SELECT id FROM sources WHERE name = 'website'")

    rotated = await run(percorso, "sources", "rotate-key", "website")
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip()
    assert new.startswith("pw_")
    assert new != old
    assert old not in rotated.output
    assert f"new write key ({new[:7]}…)" in rotated.stderr
    assert "up to 45 s" in rotated.stderr
    assert await _track(app_client, old) == 401
    assert await _track(app_client, new) == 200
    assert await scalar(db, "SELECT id FROM sources WHERE name = 'website'") == source_id
    assert new[:7] + "…" in (await run(percorso, "sources", "list")).stdout

    # A disabled source gets its new key, and stays disabled until enabled.
    assert (await run(percorso, "sources", "disable", "website")).exit_code == 0
    while_disabled = await run(percorso, "sources", "rotate-key", "website")
    assert while_disabled.exit_code == 0, while_disabled.output
    assert "percorso sources enable website" in while_disabled.stderr
    assert await _track(app_client, while_disabled.stdout.strip()) == 401
    assert (await run(percorso, "sources", "enable", "website")).exit_code == 0
    assert await _track(app_client, while_disabled.stdout.strip()) == 200
    assert await _track(app_client, new) == 401


@pytest.mark.parametrize("command", ["disable", "enable", "rotate-key"])
async def test_an_unknown_source_is_an_error(
    percorso: CliRunner, command: str, db: AsyncEngine
) -> None:
    await _create_source(percorso, "website")
    result = await run(percorso, "sources", command, "websight")
    assert result.exit_code == 2
    assert "error: no source named 'websight'" in result.stderr
    assert await scalar(db, "SELECT count(*) FROM sources WHERE disabled_at IS NOT NULL") == 0


async def _create_token(runner: CliRunner, *args: str) -> str:
    created = await run(runner, "tokens", "create", *args)
    assert created.exit_code == 0, created.output
    return created.stdout.strip()


async def test_tokens_are_listed_without_their_secrets_and_revoked_by_name_prefix_or_id(
    percorso: CliRunner, app_client: httpx.AsyncClient
) -> None:
    dashboard = await _create_token(percorso, "--name", "dashboard")
    crm = await _create_token(percorso, "--name", "crm sync")
    admin = await _create_token(percorso, "--scope", "admin", "--name", "ops")

    listed = await run(percorso, "tokens", "list")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[0].split() == [
        "id", "name", "scope", "token", "created", "revoked",
    ]  # fmt: skip
    for secret in (dashboard, crm, admin):
        assert secret[:7] + "…" in listed.stdout
        assert secret not in listed.output

    by_name = await run(percorso, "tokens", "revoke", "dashboard")
    assert by_name.exit_code == 0, by_name.output
    assert f"revoked read token 'dashboard' ({dashboard[:7]}…" in by_name.stdout
    assert "up to 45 s (PERCORSO_AUTH_CACHE_TTL_S" in by_name.stdout
    assert await _read(app_client, dashboard) == 401
    assert await _read(app_client, crm) == 200

    by_prefix = await run(percorso, "tokens", "revoke", admin[:7])
    assert by_prefix.exit_code == 0, by_prefix.output
    assert await _read(app_client, admin) == 401

    crm_id = next(line.split()[0] for line in listed.stdout.splitlines() if crm[:7] + "…" in line)
    by_id = await run(percorso, "tokens", "revoke", crm_id)
    assert by_id.exit_code == 0, by_id.output
    assert await _read(app_client, crm) == 401

    revoked = (await run(percorso, "tokens", "list")).stdout.splitlines()[1:]
    assert len(revoked) == 3
    assert all(line.split()[-1].endswith("Z") for line in revoked)  # when each was revoked


async def test_revoking_a_name_several_tokens_share_revokes_none(
    percorso: CliRunner, app_client: httpx.AsyncClient
) -> None:
    first = await _create_token(percorso)  # both named "read token"
    second = await _create_token(percorso)

    result = await run(percorso, "tokens", "revoke", "read token")
    assert result.exit_code == 2
    assert "2 tokens match 'read token'" in result.stderr
    assert first[:7] in result.stderr
    assert second[:7] in result.stderr
    assert await _read(app_client, first) == 200
    assert await _read(app_client, second) == 200


async def test_an_unknown_or_revoked_token_is_an_error(percorso: CliRunner) -> None:
    await _create_token(percorso, "--name", "dashboard")
    assert (await run(percorso, "tokens", "revoke", "dashboard")).exit_code == 0

    for token in ("dashboard", "nope", "00000000-0000-0000-0000-000000000000"):
        result = await run(percorso, "tokens", "revoke", token)
        assert result.exit_code == 2
        assert f"no token that is not revoked has the name, prefix or id {token!r}" in (
            result.stderr
        )
