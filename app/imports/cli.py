"""``percorso import events FILE --source NAME``: offline touchpoints (till receipts, social
exports…) through the same pipeline as the tracking API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import orjson
import typer

from app.config import Settings

if TYPE_CHECKING:
    import asyncpg

    from app.auth.service import SourceInfo
    from app.imports.readers import Row
    from app.imports.service import ImportSummary, Verdict

imports = typer.Typer(help="Import files of touchpoints.", no_args_is_help=True)

SHOWN_REJECTIONS = 20

# Options both import commands take.
Delimiter = Annotated[str, typer.Option("--delimiter", help="CSV field separator.")]
ChunkSize = Annotated[
    int,
    typer.Option(
        "--chunk-size",
        min=1,
        max=2_500,
        help="Rows per broker round trip and suppression-list query.",
    ),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Check every row, publish nothing.")]
ReportFile = Annotated[
    Path | None, typer.Option("--report", help="Write every rejected row here (NDJSON).")
]


@imports.command("events")
def events(
    file: Annotated[
        Path, typer.Argument(help="A .ndjson/.jsonl (one call per line) or .csv file.")
    ],
    source: Annotated[str, typer.Option("--source", help="Name of the source they came from.")],
    delimiter: Delimiter = ",",
    chunk_size: ChunkSize = 500,
    dry_run: DryRun = False,
    report: ReportFile = None,
) -> None:
    """Load touchpoints from FILE; prints a summary of accepted and rejected rows. Exits
    1 when no row was accepted, 2 on a usage error. Safe to re-run on the same file."""
    from app.imports.readers import read_rows

    _import(file, source, read_rows, delimiter, chunk_size, dry_run, report)


@imports.command("contacts")
def contacts(
    file: Annotated[
        Path,
        typer.Argument(help="A CRM export: .csv (crm_id, email, phone, … columns) or .ndjson."),
    ],
    source: Annotated[str, typer.Option("--source", help="Name of the CRM's source.")],
    delimiter: Delimiter = ",",
    chunk_size: ChunkSize = 500,
    dry_run: DryRun = False,
    report: ReportFile = None,
) -> None:
    """Bulk-load CRM contacts (as identify calls on the crm channel) through the pipeline.
    Columns: crm_id, email, phone, updated_at, message_id, external_ids.<type>; any other
    column is a trait. Exits 1 when no row was accepted, 2 on a usage error."""
    from app.contacts.importer import read_contacts

    _import(file, source, read_contacts, delimiter, chunk_size, dry_run, report)


def _import(
    file: Path,
    source: str,
    reader: Callable[[Path, str], Iterable[Row]],
    delimiter: str,
    chunk_size: int,
    dry_run: bool,
    report: Path | None,
) -> None:
    from app.imports.readers import count_rows, file_format
    from app.imports.service import import_rows

    if not file.is_file():
        _fail(f"{file}: no such file")
    if len(delimiter) != 1:
        _fail("--delimiter is one character")
    try:
        file_format(file)
    except ValueError as exc:
        _fail(str(exc))
    out = None
    if report is not None:
        # Written as rows are refused: a path it cannot be written to stops the command
        # before anything is imported.
        try:
            out = report.open("wb")
        except OSError as exc:
            _fail(f"--report: {exc.strerror}: {report}")
    settings = Settings()
    total = count_rows(file, delimiter)
    shown: list[Verdict] = []

    def rejected(verdict: Verdict) -> None:
        if len(shown) < SHOWN_REJECTIONS:
            shown.append(verdict)
        if out is not None:
            out.write(orjson.dumps({"line": verdict.line, "reason": verdict.reason}) + b"\n")

    async def run() -> ImportSummary:
        from app.db import create_pool
        from app.ingest.publisher import Publisher

        info = await _source(settings, source)
        # For the suppression list, checked once a chunk.
        pool = await create_pool(settings, size=1, application_name="percorso-import")
        publisher = None if dry_run else Publisher(settings)
        try:
            async with pool.acquire() as proxy:
                with typer.progressbar(length=total, label=f"importing {file.name}") as bar:
                    return await import_rows(
                        reader(file, delimiter),
                        file_name=file.name,
                        source=info,
                        identity=settings.identity_config(),
                        publisher=publisher,
                        # The pool hands out a proxy that forwards every Connection method.
                        connection=cast("asyncpg.Connection[Any]", proxy),
                        chunk_size=chunk_size,
                        on_progress=bar.update,
                        on_rejected=rejected,
                    )
        finally:
            if publisher is not None:
                await publisher.close()
            await pool.close()

    from app.errors import ProblemError

    try:
        summary = asyncio.run(run())
    except ProblemError as exc:
        _fail(exc.detail, code=1)
    finally:
        if out is not None:
            out.close()
    for verdict in shown:
        typer.echo(f"line {verdict.line}: {verdict.reason}", err=True)
    if summary.rejected > SHOWN_REJECTIONS:
        typer.echo(f"… and {summary.rejected - SHOWN_REJECTIONS} more", err=True)
    verb = "would accept" if dry_run else "accepted"
    typer.echo(
        f"{file.name}: {summary.rows} rows, {verb} {summary.accepted},"
        f" rejected {summary.rejected} (source {source})"
    )
    if summary.accepted == 0:
        raise typer.Exit(1)


async def _source(settings: Settings, name: str) -> SourceInfo:
    from app.auth.service import enabled_source
    from app.db import one_off_session

    async with one_off_session(settings) as session:
        return await enabled_source(session, name)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
