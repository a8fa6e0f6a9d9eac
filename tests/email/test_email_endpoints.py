"""The open pixel and click redirect over HTTP, checked on what reaches the broker."""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings
from app.email.keys import server_secret
from app.email.service import CLICKED
from app.email.tokens import EmailToken, TokenSigner
from app.kit.embedded import free_port
from tests.helpers import kill_api_connections
from tests.ingest.fixtures import SourceFactory, TopicReader, asgi_client

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Safari/605.1.15"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


def _mint(settings: Settings, source_id: object, **fields: object) -> str:
    now = datetime.now(UTC)
    token = EmailToken(
        source_id=source_id,  # type: ignore[arg-type]
        kind=str(fields.get("kind", "email")),
        value=str(fields.get("value", "ada@example.com")),
        campaign="spring",
        url=fields.get("url"),  # type: ignore[arg-type]
        issued_at=now,
        sent_at=fields.get("sent_at"),  # type: ignore[arg-type]
    )
    return TokenSigner(server_secret(settings)).mint(token)


async def test_open_pixel_serves_an_uncached_gif_and_records_email_opened(
    client: httpx.AsyncClient,
    settings: Settings,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    source, _ = await make_source(channel="web")
    token = _mint(settings, source.id)
    response = await client.get(
        "/v1/email/open.gif", params={"d": token}, headers={"user-agent": BROWSER}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content.startswith(b"GIF89a")
    assert "no-store" in response.headers["cache-control"]
    (tp,) = await topic.touchpoints(source.id, 1)
    assert tp.event == "Email Opened"
    assert tp.channel == "email"  # email touchpoints are email, whatever the source's default
    assert [(i.kind, i.value) for i in tp.identifiers] == [("email", "ada@example.com")]
    assert tp.properties == {"campaign": "spring"}
    assert "machine_activity" not in tp.flags


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"user-agent": "Mozilla/5.0"}, "machine:apple_mail_privacy"),
        ({"user-agent": GMAIL_PROXY}, "machine:gmail_image_proxy"),
        (
            {
                "user-agent": "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
            },
            "machine:yahoo_mail_proxy",
        ),
    ],
)
async def test_opens_by_mail_privacy_proxies_are_recorded_but_flagged(
    client: httpx.AsyncClient,
    settings: Settings,
    make_source: SourceFactory,
    topic: TopicReader,
    headers: dict[str, str],
    reason: str,
) -> None:
    source, _ = await make_source(channel="email")
    response = await client.get(
        "/v1/email/open.gif", params={"d": _mint(settings, source.id)}, headers=headers
    )
    assert response.status_code == 200
    (tp,) = await topic.touchpoints(source.id, 1)
    assert tp.flags[-2:] == ["machine_activity", reason]


async def test_click_redirects_to_the_signed_url_and_records_the_click(
    client: httpx.AsyncClient,
    settings: Settings,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    source, _ = await make_source(channel="email")
    url = "https://shop.example/p/1?utm_campaign=spring&a=1"
    sent = datetime.now(UTC) - timedelta(hours=1)
    token = _mint(settings, source.id, kind="crm_id", value="C-77", url=url, sent_at=sent)
    response = await client.get(
        "/v1/email/click", params={"d": token}, headers={"user-agent": BROWSER}
    )
    assert response.status_code == 302
    assert response.headers["location"] == url
    assert response.headers["cache-control"] == "no-store"
    (tp,) = await topic.touchpoints(source.id, 1)
    assert tp.event == "Email Link Clicked"
    assert tp.properties["url"] == url
    assert tp.properties["campaign"] == "spring"
    assert [(i.kind, i.value) for i in tp.identifiers] == [("crm_id", "C-77")]
    assert "machine_activity" not in tp.flags


@pytest.mark.parametrize(
    ("user_agent", "sent_ago", "reason"),
    [
        (
            "Mozilla/5.0 Barracuda Sentinel (EE)",
            timedelta(hours=1),
            "machine:link_scanner:barracuda",
        ),
        ("python-requests/2.32", timedelta(hours=1), "machine:http_client"),
        ("", timedelta(hours=1), "machine:no_user_agent"),
        (BROWSER, timedelta(seconds=0), "machine:clicked_too_soon_after_send"),
    ],
)
async def test_clicks_by_link_scanners_are_recorded_but_flagged(
    client: httpx.AsyncClient,
    settings: Settings,
    make_source: SourceFactory,
    topic: TopicReader,
    user_agent: str,
    sent_ago: timedelta,
    reason: str,
) -> None:
    source, _ = await make_source(channel="email")
    token = _mint(
        settings, source.id, url="https://shop.example/", sent_at=datetime.now(UTC) - sent_ago
    )
    response = await client.get(
        "/v1/email/click", params={"d": token}, headers={"user-agent": user_agent}
    )
    assert response.status_code == 302
    (tp,) = await topic.touchpoints(source.id, 1)
    assert tp.flags[-2:] == ["machine_activity", reason]


async def test_missing_forged_or_tampered_tokens_never_redirect(
    client: httpx.AsyncClient, settings: Settings, make_source: SourceFactory
) -> None:
    source, _ = await make_source(channel="email")
    good = _mint(settings, source.id, url="https://shop.example/")
    raw = bytearray(base64.urlsafe_b64decode(good + "=="))
    raw[20] ^= 0x20  # inside the payload: e.g. a different URL or recipient
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    forged = TokenSigner(b"not the server secret at all, 32+").mint(
        EmailToken(
            source.id, "email", "a@b.example", None, "https://evil.example/", datetime.now(UTC)
        )
    )
    open_token = _mint(settings, source.id)  # a pixel token has no URL to go to
    for params in (
        {},
        {"d": ""},
        {"d": tampered},
        {"d": forged},
        {"d": open_token},
        {"d": "x" * 5000},
    ):
        response = await client.get("/v1/email/click", params=params)
        assert response.status_code in (400, 422), params
        assert "location" not in response.headers
    assert (await client.get("/v1/email/open.gif", params={"d": tampered})).status_code == 400


async def test_a_verified_click_still_redirects_when_its_source_is_gone(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    token = _mint(settings, uuid.uuid4(), url="https://shop.example/still-works")
    response = await client.get("/v1/email/click", params={"d": token})
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.example/still-works"


def _not_recorded(reason: str) -> float:
    sample = REGISTRY.get_sample_value(
        "percorso_email_events_not_recorded_total", {"reason": reason}
    )
    return sample or 0.0


async def test_a_verified_click_redirects_when_its_database_connection_was_lost(
    client: httpx.AsyncClient,
    settings: Settings,
    db: AsyncEngine,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    """After a database restart or failover, the click whose source lookup meets the lost
    connection still redirects (its event lost and counted); the next click is recorded."""
    source, _ = await make_source(channel="email")
    url = "https://shop.example/after-a-restart"
    token = _mint(settings, source.id, url=url, sent_at=datetime.now(UTC) - timedelta(hours=1))
    params, headers = {"d": token}, {"user-agent": BROWSER}
    assert (await client.get("/v1/email/click", params=params, headers=headers)).status_code == 302
    await topic.touchpoints(source.id, 1)
    lost_before = _not_recorded("service-unavailable")

    assert await kill_api_connections(db) >= 1
    lost = await client.get("/v1/email/click", params=params, headers=headers)
    assert lost.status_code == 302, lost.text
    assert lost.headers["location"] == url
    assert _not_recorded("service-unavailable") == lost_before + 1

    again = await client.get("/v1/email/click", params=params, headers=headers)
    assert again.status_code == 302
    assert [tp.event for tp in await topic.touchpoints(source.id, 2)] == [CLICKED, CLICKED]


async def test_with_the_database_down_a_verified_open_and_click_still_answer(
    channel_settings: Settings, db: AsyncEngine
) -> None:
    """The GIF and the redirect, whatever the source's lookup meets; nothing recorded."""
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/percorso"
    # Validated anew: a copy would keep the SQLAlchemy URL cached from the database's.
    unavailable = Settings.model_validate({**channel_settings.model_dump(), "database_url": down})
    url = "https://shop.example/while-down"
    open_token = _mint(channel_settings, uuid.uuid4())
    click_token = _mint(channel_settings, uuid.uuid4(), url=url)
    lost_before = _not_recorded("service-unavailable")
    async with asgi_client(unavailable) as client:
        opened = await client.get("/v1/email/open.gif", params={"d": open_token})
        clicked = await client.get("/v1/email/click", params={"d": click_token})
    assert opened.status_code == 200
    assert opened.content.startswith(b"GIF89a")
    assert (clicked.status_code, clicked.headers["location"]) == (302, url)
    assert _not_recorded("service-unavailable") == lost_before + 2


def test_cli_mints_links_and_pixels_for_a_source(
    settings: Settings, db: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERCORSO_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("PERCORSO_PUBLIC_URL", "https://track.example")
    runner = CliRunner()
    created = runner.invoke(
        cli, ["sources", "create", "--name", "newsletter", "--channel", "email"]
    )
    assert created.exit_code == 0, created.output
    link = runner.invoke(
        cli,
        [
            "email",
            "link",
            "--source",
            "newsletter",
            "--to",
            " Ada@Example.com ",
            "--url",
            "https://shop.example/x?a=1",
            "--campaign",
            "c1",
            "--sent-at",
            "now",
        ],
    )
    assert link.exit_code == 0, link.output
    url = link.stdout.strip()
    assert url.startswith("https://track.example/v1/email/click?d=")
    token = TokenSigner(server_secret(settings)).verify(url.split("d=", 1)[1])
    assert (token.kind, token.value, token.campaign) == ("email", "ada@example.com", "c1")
    assert token.url == "https://shop.example/x?a=1"
    assert token.sent_at is not None
    pixel = runner.invoke(
        cli, ["email", "pixel", "--source", "newsletter", "--to", "user_id:42", "--html"]
    )
    assert pixel.exit_code == 0, pixel.output
    assert pixel.stdout.startswith('<img src="https://track.example/v1/email/open.gif?d=')
    bad_url = runner.invoke(
        cli,
        ["email", "link", "--source", "newsletter", "--to", "a@b.example", "--url", "javascript:x"],
    )
    assert bad_url.exit_code == 2
    unknown = runner.invoke(cli, ["email", "pixel", "--source", "nope", "--to", "a@b.example"])
    assert unknown.exit_code == 2
    assert "no enabled source" in unknown.stderr


async def test_links_signed_with_a_previous_secret_key_still_redirect(
    channel_settings: Settings, make_source: SourceFactory, topic: TopicReader
) -> None:
    """PERCORSO_SECRET_KEY rotated: clicks on emails already sent are recorded and
    redirected; a link of a key no longer listed is refused."""
    old, older, new = (secrets.token_urlsafe(32) for _ in range(3))
    source, _ = await make_source(channel="email")
    url = "https://shop.example/spring"
    minted = {
        key: _mint(
            channel_settings.model_copy(update={"secret_key": SecretStr(key)}), source.id, url=url
        )
        for key in (old, older, new)
    }
    rotated = channel_settings.model_copy(
        update={"secret_key": SecretStr(new), "secret_key_previous": SecretStr(f"{old}, {older}")}
    )
    async with asgi_client(rotated) as client:
        for key in (old, older, new):
            response = await client.get(
                "/v1/email/click", params={"d": minted[key]}, headers={"user-agent": BROWSER}
            )
            assert response.status_code == 302
            assert response.headers["location"] == url
        assert len(await topic.touchpoints(source.id, 3)) == 3
    forgotten = channel_settings.model_copy(update={"secret_key": SecretStr(new)})
    async with asgi_client(forgotten) as client:
        response = await client.get("/v1/email/click", params={"d": minted[old]})
        assert response.status_code == 400
        assert "location" not in response.headers
