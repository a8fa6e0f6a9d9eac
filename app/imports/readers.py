"""Reading import files into rows: NDJSON (one call per line) or CSV (see
:mod:`app.imports.mapping`). A broken row is a row with an error, never an exception, so
one bad line cannot stop an import."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.imports.mapping import MappingError, csv_row_to_message

FORMATS = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".csv": "csv"}


@dataclass(frozen=True, slots=True)
class Row:
    """One input row: its 1-based line number, and the call or the reason there is none.
    ``key`` is a canonical rendering of the row's content, for deterministic messageIds."""

    line: int
    message: dict[str, Any] | None
    error: str | None
    key: bytes


def file_format(path: Path) -> str:
    """``ndjson`` or ``csv`` by extension; raises ``ValueError`` for anything else."""
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise ValueError(f"{path.name}: use a .ndjson, .jsonl or .csv file")
    return found


def count_rows(path: Path, delimiter: str = ",") -> int:
    """Rows :func:`read_rows` will yield (a cheap first pass, for the progress bar)."""
    return sum(1 for _ in raw_records(path, delimiter))


def read_rows(path: Path, delimiter: str = ",") -> Iterator[Row]:
    for line, raw in raw_records(path, delimiter):
        if isinstance(raw, dict):  # CSV record
            key = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
            try:
                yield Row(line, csv_row_to_message(raw), None, key)
            except MappingError as exc:
                yield Row(line, None, str(exc), key)
            continue
        key = raw.encode()
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield Row(line, None, f"not valid JSON: {exc.msg}", key)
            continue
        if not isinstance(message, dict):
            yield Row(line, None, "a line must hold one JSON object", key)
            continue
        yield Row(line, message, None, key)


def raw_records(path: Path, delimiter: str) -> Iterator[tuple[int, str | dict[str, str]]]:
    """``(line, text)`` per NDJSON line, or ``(line, record)`` per CSV record."""
    if file_format(path) == "ndjson":
        with path.open(encoding="utf-8-sig", errors="replace") as lines:
            for number, text in enumerate(lines, start=1):
                if text.strip():
                    yield number, text.strip()
        return
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter, restkey="__extra__")
        for record in reader:
            # line_num is the physical line where the record ended (quoted newlines).
            yield reader.line_num, dict(record)
