"""``percorso sources|tokens``: create, list, disable and rotate write keys; create, list and
revoke API tokens. Secrets are printed once, at creation or rotation; listings show only
their display prefixes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

sources = typer.Typer(help="Manage sources (write keys).", no_args_is_help=True)
tokens = typer.Typer(help="Manage API tokens.", no_args_is_help=True)

SourceName = Annotated[str, typer.Argument(help="The source's name.")]


@sources.command("create")
def sources_create(
    name: Annotated[str, typer.Option("--name", help="A unique name, e.g. 'website'.")],
    channel: Annotated[
        str, typer.Option("--channel", help="Default channel of its events.")
    ] = "web",
    allowed_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-origin",
            help="A browser origin allowed to send (repeatable); default: any origin.",
        ),
    ] = None,
    rate_limit: Annotated[
        float | None,
        typer.Option(
            "--rate-limit",
            help="Events per second per API replica (default: PERCORSO_INGEST_RATE_LIMIT_PER_S).",
        ),
    ] = None,
) -> None:
    """Create a source and print its write key (shown once)."""
    from app.auth.service import create_source

    settings: dict[str, Any] = {}
    if allowed_origin:
        settings["allowed_origins"] = allowed_origin
    if rate_limit is not None:
        settings["rate_limit_per_s"] = rate_limit

    async def run() -> str:
        async with _session(Settings()) as session:
            source, key = await create_source(
                session, name=name, channel=channel, settings=settings
            )
            await session.commit()
        typer.echo(
            json.dumps(
                {
                    "id": str(source.id),
                    "name": source.name,
                    "channel": source.channel,
                    "settings": source.settings,
                }
            ),
            err=True,
        )
        return key

    typer.echo(_run_admin(run))


@sources.command("list")
def sources_list() -> None:
    """List the sources: name, channel, write key's first characters, created, disabled."""
    from app.auth.service import list_sources

    async def run() -> str:
        async with _session(Settings()) as session:
            found = await list_sources(session)
        return _table(
            ("name", "channel", "write key", "created", "disabled"),
            [
                (
                    s.name,
                    s.channel,
                    f"{s.write_key_prefix}…",
                    _when(s.created_at),
                    _when(s.disabled_at),
                )
                for s in found
            ],
        )

    typer.echo(_run_admin(run), nl=False)


@sources.command("disable")
def sources_disable(name: SourceName) -> None:
    """Disable a source: the API refuses its write key and records none of its email links."""
    _set_disabled(name, True)


@sources.command("enable")
def sources_enable(name: SourceName) -> None:
    """Enable a disabled source again: its write key works again."""
    _set_disabled(name, False)


def _set_disabled(name: str, disabled: bool) -> None:
    from app.auth.service import set_source_disabled

    settings = Settings()

    async def run() -> str:
        async with _session(settings) as session:
            source = await set_source_disabled(session, name, disabled)
            await session.commit()
        key = f"write key {source.write_key_prefix}…"
        if not disabled:
            return (
                f"enabled source {name!r}: its {key} works again; a running API that refused"
                f" it keeps refusing it for up to {_cache_delay(settings)}"
            )
        return (
            f"disabled source {name!r}: its {key} stops working; a running API that accepted"
            f" it keeps accepting it for up to {_cache_delay(settings)}"
        )

    typer.echo(_run_admin(run))


@sources.command("rotate-key")
def sources_rotate_key(name: SourceName) -> None:
    """Give a source a new write key, printed once; the old one stops working."""
    from app.auth.service import rotate_source_key

    settings = Settings()

    async def run() -> str:
        async with _session(settings) as session:
            source, key = await rotate_source_key(session, name=name)
            await session.commit()
        typer.echo(
            f"source {name!r} has a new write key ({source.write_key_prefix}…); the old one"
            f" stops working, but a running API that accepted it keeps accepting it for up to"
            f" {_cache_delay(settings)}",
            err=True,
        )
        if source.disabled_at is not None:
            typer.echo(
                f"the source is disabled: `percorso sources enable {name}` to use the key",
                err=True,
            )
        return key

    typer.echo(_run_admin(run))


@tokens.command("create")
def tokens_create(
    scope: Annotated[str, typer.Option("--scope", help="read or admin.")] = "read",
    name: Annotated[str, typer.Option("--name")] = "",
) -> None:
    """Create an API token and print it (shown once)."""
    from app.auth.service import create_token

    async def run() -> str:
        async with _session(Settings()) as session:
            _, secret = await create_token(session, scope=scope, name=name)
            await session.commit()
        return secret

    typer.echo(_run_admin(run))


@tokens.command("list")
def tokens_list() -> None:
    """List the API tokens: id, name, scope, first characters, created, revoked."""
    from app.auth.service import list_tokens

    async def run() -> str:
        async with _session(Settings()) as session:
            found = await list_tokens(session)
        return _table(
            ("id", "name", "scope", "token", "created", "revoked"),
            [
                (
                    str(t.id),
                    t.name,
                    t.scope,
                    f"{t.token_prefix}…",
                    _when(t.created_at),
                    _when(t.revoked_at),
                )
                for t in found
            ],
        )

    typer.echo(_run_admin(run), nl=False)


@tokens.command("revoke")
def tokens_revoke(
    token: Annotated[
        str,
        typer.Argument(
            help="The token's name, its first characters as listed (pr_AbCd) or its id."
        ),
    ],
) -> None:
    """Revoke an API token: the API refuses it from now on."""
    from app.auth.service import revoke_token

    settings = Settings()

    async def run() -> str:
        async with _session(settings) as session:
            revoked = await revoke_token(session, token)
            await session.commit()
        return (
            f"revoked {revoked.scope} token {revoked.name!r} ({revoked.token_prefix}…, id"
            f" {revoked.id}); a running API that accepted it keeps accepting it for up to"
            f" {_cache_delay(settings)}"
        )

    typer.echo(_run_admin(run))


def _session(settings: Settings) -> AbstractAsyncContextManager[AsyncSession]:
    # Imported here: other commands (`percorso healthcheck`) load no SQLAlchemy.
    from app.db import one_off_session

    return one_off_session(settings)


def _run_admin(run: Callable[[], Coroutine[Any, Any, str]]) -> str:
    from app.errors import ProblemError

    try:
        return asyncio.run(run())
    except ProblemError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from None


def _cache_delay(settings: Settings) -> str:
    return f"{settings.auth_cache_ttl_s:g} s (PERCORSO_AUTH_CACHE_TTL_S, its credential cache)"


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in (header, *rows)
    )
