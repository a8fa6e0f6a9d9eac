"""``percorso suppressions``: suppress an identifier without erasing anything, lift a
suppression (consent given again), and check one. The same rules as the API's
(app.suppressions.service): values normalised as events' are, stored only hashed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import typer

from app.config import Settings

suppressions = typer.Typer(help="Manage the suppression list.", no_args_is_help=True)

Kind = Annotated[str, typer.Argument(help="email, phone, user_id, crm_id, anonymous_id, …")]
Value = Annotated[str, typer.Argument(help="The value, as events send it.")]


@suppressions.command("add")
def suppressions_add(kind: Kind, value: Value) -> None:
    """Suppress an identifier: the pipeline drops its events from now on (nothing stored
    is erased: `DELETE /v1/customers/{id}` does that)."""
    from app.suppressions import service

    async def run(connection: Any, settings: Settings) -> str:
        found, added = await service.suppress(
            connection, _identifier(kind, value), settings.identity_config()
        )
        if not added:
            return f"{found.kind} suppressed already, since {found.created_at:%Y-%m-%d %H:%M:%SZ}"
        return f"{found.kind} suppressed: its events are dropped from now on"

    typer.echo(_run(run))


@suppressions.command("remove")
def suppressions_remove(kind: Kind, value: Value) -> None:
    """Lift a suppression: the pipeline stores the identifier's events again."""
    from app.suppressions import service

    async def run(connection: Any, settings: Settings) -> str:
        found = await service.unsuppress(
            connection, _identifier(kind, value), settings.identity_config()
        )
        return f"{found.kind} no longer suppressed: its events are stored again"

    typer.echo(_run(run))


@suppressions.command("check")
def suppressions_check(kind: Kind, value: Value) -> None:
    """Whether an identifier is suppressed (exit status 2 when not)."""
    from app.suppressions import service

    async def run(connection: Any, settings: Settings) -> str:
        found = await service.status(
            connection, _identifier(kind, value), settings.identity_config()
        )
        return (
            f"{found.kind} suppressed ({found.reason}) since {found.created_at:%Y-%m-%d %H:%M:%SZ}"
        )

    typer.echo(_run(run))


def _identifier(kind: str, value: str) -> Any:
    from pydantic import ValidationError

    from app.customers.schemas import IdentifierIn
    from app.errors import InvalidRequest, validation_errors

    try:
        return IdentifierIn(kind=kind, value=value)
    except ValidationError as exc:
        messages = "; ".join(
            f"{e['field']}: {e['message']}" for e in validation_errors(exc.errors())
        )
        raise InvalidRequest(messages) from None


def _run(run: Callable[[Any, Settings], Coroutine[Any, Any, str]]) -> str:
    from app.errors import ProblemError

    async def connected() -> str:
        from app.db import create_pool

        settings = Settings()
        pool = await create_pool(settings, size=1, application_name="percorso-cli")
        try:
            async with pool.acquire() as connection:
                return await run(connection, settings)
        finally:
            await pool.close()

    try:
        return asyncio.run(connected())
    except ProblemError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from None
