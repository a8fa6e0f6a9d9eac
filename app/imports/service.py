"""Importing rows through the same pipeline as the tracking API.

Generic over what the rows mean: a caller supplies :class:`~app.imports.readers.Row`\\ s
whose ``message`` is a Segment-shaped call (events from a till, CRM contacts as identify
calls…). Each row is validated and built by :mod:`app.ingest.service` (same rules as
``/v1/batch``, except that email, phone or externalIds alone identify a person, and that a
row's time is its ``timestamp`` as written: no clock correction by its ``sentAt``), then
published in chunks; :func:`import_rows` returns only after the broker acknowledged every
accepted row. A row carrying a suppressed identifier (app.suppressions), which the pipeline
would drop, is rejected ("suppressed"): one statement checks each chunk, as
``POST /v1/contacts`` checks a request.

Re-importing a file does not duplicate events: a row without ``messageId`` gets one derived
from the file name, line number and content, and the pipeline drops a
``(source, messageId)`` it already stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.auth.service import SourceInfo
from app.identity.identifiers import IdentityConfig
from app.imports.readers import Row
from app.ingest import service
from app.ingest.publisher import Publisher
from app.suppressions import service as suppressions
from app.touchpoint import Touchpoint

DEFAULT_CHUNK = 500
LIBRARY = {"name": "percorso-import", "version": "1"}


@dataclass(frozen=True, slots=True)
class Verdict:
    line: int
    reason: str


@dataclass(slots=True)
class ImportSummary:
    rows: int = 0
    accepted: int = 0
    rejected: int = 0


def stable_message_id(file_name: str, line: int, key: bytes) -> str:
    digest = hashlib.sha256(f"{file_name}\0{line}\0".encode() + key).hexdigest()
    return f"import-{digest[:40]}"


async def import_rows(
    rows: Iterable[Row],
    *,
    file_name: str,
    source: SourceInfo,
    identity: IdentityConfig,
    publisher: Publisher | None,
    connection: asyncpg.Connection[Any],
    chunk_size: int = DEFAULT_CHUNK,
    on_progress: Callable[[int], None] | None = None,
    on_rejected: Callable[[Verdict], None] | None = None,
) -> ImportSummary:
    """Validate, build and publish every row, checking the suppression list on
    ``connection``. ``publisher=None`` is a dry run: verdicts only. Each rejected row goes
    to ``on_rejected`` as it comes, and is only counted here (a file of millions of
    refused rows is no more memory than a valid one). Raises
    :class:`~app.ingest.publisher.BrokerUnavailable` if a chunk is not acknowledged; rows
    of earlier chunks are on the broker, and re-running is safe."""
    summary = ImportSummary()
    pending: list[tuple[int, Touchpoint]] = []  # (line, touchpoint)

    def reject(verdict: Verdict) -> None:
        summary.rejected += 1
        if on_rejected:
            on_rejected(verdict)

    async def flush() -> None:
        if not pending:
            return
        refused = await suppressions.suppressed_of(connection, [tp for _, tp in pending])
        kept = []
        for (line, tp), suppressed in zip(pending, refused, strict=True):
            if suppressed:
                reject(Verdict(line, _suppressed_reason(suppressed)))
            else:
                kept.append(tp)
        if publisher is not None and kept:
            await publisher.publish([(service.partition_key(tp), tp.to_bytes()) for tp in kept])
        summary.accepted += len(kept)
        if on_progress:
            on_progress(len(pending))
        pending.clear()

    for row in rows:
        summary.rows += 1
        verdict = _build(row, file_name, source, identity)
        if isinstance(verdict, Verdict):
            reject(verdict)
            if on_progress:
                on_progress(1)
            continue
        pending.append((row.line, verdict))
        if len(pending) >= chunk_size:
            await flush()
    await flush()
    return summary


def _suppressed_reason(keys: list[suppressions.Key]) -> str:
    # Kinds only: a report names no identifier's value.
    kinds = list(dict.fromkeys(kind for kind, _ in keys))
    named = " and ".join(kinds) + (" is" if len(kinds) == 1 else " are")
    return (
        f"suppressed: the row's {named} suppressed (erased, or no longer to be processed):"
        " the pipeline would drop it"
    )


def _build(
    row: Row, file_name: str, source: SourceInfo, identity: IdentityConfig
) -> Touchpoint | Verdict:
    if row.message is None:
        return Verdict(row.line, row.error or "unreadable row")
    message: dict[str, Any] = row.message
    if not message.get("messageId"):
        message = {**message, "messageId": stable_message_id(file_name, row.line, row.key)}
    message.setdefault("type", "track")
    touchpoints, rejected = service.build_all(
        [message],
        call_type=None,
        source=source,
        received_at=datetime.now(UTC),
        identity=identity,
        request_context={"library": LIBRARY},
        ids_optional=True,
        replayed=True,
    )
    if rejected:
        reasons = "; ".join(
            f"{e.field}: {e.message}" if e.field else e.message for e in rejected[0].errors
        )
        return Verdict(row.line, reasons)
    return touchpoints[0]
