"""``percorso email link|pixel``: mint signed tracking URLs for an email source."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, NoReturn

import typer

from app.config import Settings

email = typer.Typer(help="Mint signed email tracking links and open pixels.", no_args_is_help=True)

SourceOpt = Annotated[str, typer.Option("--source", help="Name of the (email) source.")]
ToOpt = Annotated[
    str,
    typer.Option(
        "--to",
        help="The recipient as KIND:VALUE (email:ada@example.com, user_id:42, crm_id:C-7, "
        "or any custom kind); a bare value is an email address.",
    ),
]
CampaignOpt = Annotated[str | None, typer.Option("--campaign", help="Campaign name.")]
SentAtOpt = Annotated[
    str | None,
    typer.Option(
        "--sent-at",
        help="When the email is sent ('now' or ISO 8601): clicks within seconds of it are "
        "flagged as link scanners.",
    ),
]


@email.command("link")
def link(
    source: SourceOpt,
    to: ToOpt,
    url: Annotated[str, typer.Option("--url", help="Destination (http or https).")],
    campaign: CampaignOpt = None,
    sent_at: SentAtOpt = None,
) -> None:
    """Print a click-tracking URL that records `Email Link Clicked` and redirects to URL."""
    typer.echo(_mint("click", source, to, campaign, url, sent_at))


@email.command("pixel")
def pixel(
    source: SourceOpt,
    to: ToOpt,
    campaign: CampaignOpt = None,
    html: Annotated[bool, typer.Option("--html", help="Print an <img> tag.")] = False,
) -> None:
    """Print an open-pixel URL that records `Email Opened`."""
    url = _mint("open.gif", source, to, campaign, None, None)
    typer.echo(f'<img src="{url}" width="1" height="1" alt="">' if html else url)


def _mint(
    path: str, source: str, to: str, campaign: str | None, url: str | None, sent_at: str | None
) -> str:
    from app.email.keys import server_secret
    from app.email.tokens import EmailToken, TokenSigner
    from app.identity.identifiers import InvalidIdentifier, normalise, normalise_kind

    settings = Settings()
    kind, sep, value = to.partition(":")
    if not sep or "@" in kind:
        kind, value = "email", to
    try:
        kind = normalise_kind(kind)
        value = normalise(kind, value, settings.identity_config())
    except InvalidIdentifier as exc:
        _fail(f"--to: {exc.reason}")
    source_id = asyncio.run(_source_id(settings, source))
    now = datetime.now(UTC)
    token = EmailToken(
        source_id=source_id,
        kind=kind,
        value=value,
        campaign=campaign,
        url=url,
        issued_at=now,
        sent_at=_when(sent_at, now),
    )
    try:
        text = TokenSigner(server_secret(settings)).mint(token)
    except ValueError as exc:
        _fail(str(exc))
    base = (settings.public_url or f"http://{settings.http_host}:{settings.http_port}").rstrip("/")
    return f"{base}/v1/email/{path}?d={text}"


async def _source_id(settings: Settings, name: str) -> uuid.UUID:
    from app.auth.service import enabled_source
    from app.db import one_off_session
    from app.errors import InvalidRequest

    try:
        async with one_off_session(settings) as session:
            source = await enabled_source(session, name)
    except InvalidRequest as exc:
        _fail(exc.detail)
    return uuid.UUID(str(source.id))


def _when(text: str | None, now: datetime) -> datetime | None:
    if text is None:
        return None
    if text == "now":
        return now
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        _fail("--sent-at: 'now' or an ISO 8601 time")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
