"""``percorso journey check|rebuild``: validate a journey model; recompute stored journeys."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, NoReturn

import typer

from app.config import Settings
from app.journey.errors import JourneyModelError
from app.journey.model import JourneyModel, load_model

journey = typer.Typer(help="Journey models and stored journeys.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def model_or_exit(spec: str) -> JourneyModel:
    """Load a model; on a bad model print its file, line and problem and exit 2."""
    try:
        return load_model(spec)
    except JourneyModelError as exc:
        _fail(f"invalid journey model: {exc}")


@journey.command("check")
def check(
    model: Annotated[
        str | None,
        typer.Argument(
            help="A preset name or a .toml/.yaml file (default: PERCORSO_JOURNEY_MODEL)."
        ),
    ] = None,
) -> None:
    """Validate a journey model and print its stages, rules and fingerprint."""
    from app.journey.docs import rules_table

    loaded = model_or_exit(model or Settings().journey_model)
    typer.echo(f"{loaded.source}: model {loaded.name!r} is valid")
    typer.echo(f"fingerprint {loaded.fingerprint()}\n")
    typer.echo(rules_table(loaded), nl=False)


@journey.command("rebuild")
def rebuild(
    customer: Annotated[
        uuid.UUID | None,
        typer.Option("--customer", help="Recompute only this customer (always, even if current)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=10_000, help="Customers per transaction.")
    ] = 500,
) -> None:
    """Recompute stored stages and transitions with the active model (PERCORSO_JOURNEY_MODEL).

    Processes the customers whose journey another model computed, in batches of one
    transaction each, next to running consumers. Interrupted? Run it again: finished
    batches are skipped. Roll a new model out to the consumers before rebuilding.
    """
    settings = Settings()
    model = model_or_exit(settings.journey_model)
    asyncio.run(_rebuild(settings, model, customer, batch_size))


async def _rebuild(
    settings: Settings, model: JourneyModel, customer: uuid.UUID | None, batch_size: int
) -> None:
    from app.db import create_pool
    from app.journey import rebuild as service

    pool = await create_pool(settings)
    try:
        if customer is not None:
            try:
                recomputed = await service.rebuild_customer(pool, model, customer)
            except service.UnknownCustomer as exc:
                _fail(str(exc), 1)
            typer.echo(f"recomputed customer {recomputed} with model {model.name!r}")
            return
        total = await service.pending(pool, model)
        if total == 0:
            typer.echo(f"every journey is up to date with model {model.name!r}")
            return
        label = f"Recomputing {total} journeys with model {model.name!r}"
        with typer.progressbar(length=total, label=label) as bar:
            done = await service.rebuild_stale(
                pool, model, batch_size=batch_size, progress=bar.update
            )
        typer.echo(f"recomputed {done} journeys")
    finally:
        await pool.close()
