"""Email opens and clicks on the customer's timeline, with their channel and flags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.email.keys import server_secret
from app.email.tokens import EmailToken, TokenSigner
from app.pipeline.runner import Pipeline
from tests.helpers import basic, bearer, wait_until
from tests.ingest.fixtures import SourceFactory

pytestmark = pytest.mark.pipeline


async def test_opens_and_clicks_appear_in_the_timeline_with_channel_and_machine_flags(
    app_client: httpx.AsyncClient,
    settings: Settings,
    make_source: SourceFactory,
    read_token: str,
    pipeline: Pipeline,
) -> None:
    _web, web_key = await make_source(channel="web")
    mail, _ = await make_source(channel="email")
    signup = {"userId": "mail-ada", "traits": {"email": "mail-ada@example.com"}}
    assert (
        await app_client.post("/v1/identify", json=signup, headers=basic(web_key))
    ).status_code == 200
    signer = TokenSigner(server_secret(settings))
    sent = datetime.now(UTC) - timedelta(hours=2)

    def mint(url: str | None) -> str:
        return signer.mint(
            EmailToken(mail.id, "email", "mail-ada@example.com", "welcome", url, sent, sent)
        )

    # Apple Mail Privacy Protection prefetch, then the reader clicks.
    await app_client.get(
        "/v1/email/open.gif", params={"d": mint(None)}, headers={"user-agent": "Mozilla/5.0"}
    )
    click = await app_client.get(
        "/v1/email/click",
        params={"d": mint("https://shop.example/welcome")},
        headers={
            "user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"
        },
    )
    assert click.status_code == 302

    async def three_events() -> list[dict[str, Any]] | None:
        found = await app_client.get(
            "/v1/customers/lookup",
            params={"kind": "user_id", "value": "mail-ada"},
            headers=bearer(read_token),
        )
        if found.status_code != 200:
            return None
        page = await app_client.get(
            f"/v1/customers/{found.json()['id']}/timeline", headers=bearer(read_token)
        )
        items: list[dict[str, Any]] = page.json()["items"]
        return items if len(items) == 3 else None

    items = {i["event"] or i["type"]: i for i in await wait_until(three_events)}
    assert items["identify"]["channel"] == "web"
    assert items["Email Opened"]["channel"] == "email"
    assert "machine_activity" in items["Email Opened"]["flags"]
    assert items["Email Link Clicked"]["channel"] == "email"
    assert "machine_activity" not in items["Email Link Clicked"]["flags"]
    assert items["Email Link Clicked"]["properties"]["url"] == "https://shop.example/welcome"
