"""``percorso sources|tokens``: create, list, disable and rotate write keys; create, list and
revoke API tokens. Secrets are printed once, at creation or rotation; listings show only
their display prefixes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from app.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.ingest.source_settings import SourcePolicy

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
    """List the sources: name, channel, write key's first characters, allowed origins, rate
    limit, created, disabled."""
    from app.auth.service import list_sources

    async def run() -> str:
        async with _session(Settings()) as session:
            found = await list_sources(session)
        return _table(
            ("name", "channel", "write key", "origins", "rate", "created", "disabled"),
            [
                (
                    s.name,
                    s.channel,
                    f"{s.write_key_prefix}…",
                    *_settings_columns(s.settings),
                    _when(s.created_at),
                    _when(s.disabled_at),
                )
                for s in found
            ],
        )

    typer.echo(_run_admin(run), nl=False)


@sources.command("set")
def sources_set(
    name: SourceName,
    allowed_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-origin",
            help="A browser origin allowed to send (repeatable): the new list, replacing the"
            " stored one.",
        ),
    ] = None,
    any_origin: Annotated[
        bool, typer.Option("--any-origin", help="Allow any browser origin again.")
    ] = False,
    rate_limit: Annotated[
        float | None,
        typer.Option("--rate-limit", help="Events per second per API replica."),
    ] = None,
    default_rate_limit: Annotated[
        bool,
        typer.Option(
            "--default-rate-limit",
            help="Go back to the default rate (PERCORSO_INGEST_RATE_LIMIT_PER_S).",
        ),
    ] = False,
) -> None:
    """Change a source's tracking settings in place; its other stored settings are kept."""
    from app.auth.service import KEEP, Keep, set_source_settings

    if allowed_origin and any_origin:
        _usage("--allowed-origin and --any-origin contradict each other: give one")
    if rate_limit is not None and default_rate_limit:
        _usage("--rate-limit and --default-rate-limit contradict each other: give one")
    origins: list[str] | Keep | None = allowed_origin or (None if any_origin else KEEP)
    rate: float | Keep | None = (
        rate_limit if rate_limit is not None else None if default_rate_limit else KEEP
    )
    if origins is KEEP and rate is KEEP:
        _usage(
            "nothing to set: give --allowed-origin (repeatable) or --any-origin,"
            " and/or --rate-limit or --default-rate-limit"
        )
    settings = Settings()

    async def run() -> str:
        async with _session(settings) as session:
            changed = await set_source_settings(
                session, name, allowed_origins=origins, rate_limit_per_s=rate
            )
            await session.commit()
        source = changed.source
        for field, reason in changed.still_invalid.items():
            typer.echo(
                f"warning: the stored {field}, left as it is, still does not read ({reason}):"
                f" {_UNREADABLE.get(field, 'it is ignored')}",
                err=True,
            )
        policy = changed.policy
        origins_now = ", ".join(_origins(source.settings, policy))
        rate_now = _rate(policy, settings.ingest_rate_limit_per_s)
        lines = [
            f"source {name!r} settings: {json.dumps(source.settings)}",
            f"allowed origins: {origins_now}; rate limit: {rate_now}",
        ]
        if source.disabled_at is not None:
            lines.append(f"the source stays disabled (`percorso sources enable {name}`)")
        lines.append(
            "a running API that loaded the source keeps applying its old settings for up to"
            f" {_cache_delay(settings)}"
        )
        return "\n".join(lines)

    typer.echo(_run_admin(run))


# What a stored field that does not read does (see app.ingest.source_settings.parse).
_UNREADABLE = {
    "allowed_origins": "every browser is refused until --allowed-origin or --any-origin sets it",
    "rate_limit_per_s": "the source gets the default rate until --rate-limit or"
    " --default-rate-limit sets it",
}


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


def _usage(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _settings_columns(stored: object) -> tuple[str, str]:
    """A source's allowed origins and rate limit as the API reads them, for the listing:
    ``any``, one origin, or the first of several and how many more; ``500/s`` or
    ``default``; ``invalid`` for a stored field that does not read."""
    from app.ingest import source_settings

    policy = source_settings.parse(stored)
    origins = _origins(stored, policy)
    if len(origins) > 1:
        return f"{origins[0]} (+{len(origins) - 1})", _rate(policy)
    return origins[0], _rate(policy)


def _origins(stored: object, policy: SourcePolicy) -> list[str]:
    """The allowed origins in their stored order, or what stands for them."""
    if policy.origins_invalid:
        return ["invalid (browsers refused)"]
    if policy.allowed_origins is None or not isinstance(stored, dict):
        return ["any"]
    # They read, so they are stored as a list of origins.
    return [str(origin) for origin in stored["allowed_origins"]]


def _rate(policy: SourcePolicy, default: float | None = None) -> str:
    """``500/s``, or ``default`` (stating it when ``default`` is given), after ``invalid``
    when the stored value does not read."""
    if policy.rate_limit_per_s is not None:
        return f"{policy.rate_limit_per_s:g}/s"
    invalid = bool(policy.reasons(("rate_limit_per_s",)))
    if default is None:
        return "invalid (default)" if invalid else "default"
    stated = f"default, {default:g}/s (PERCORSO_INGEST_RATE_LIMIT_PER_S)"
    return f"invalid, so the {stated}" if invalid else stated


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
