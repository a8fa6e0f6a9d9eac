"""Reading import files into rows: NDJSON (one call per line) or CSV (see
:mod:`app.imports.mapping`). A broken row is a row with an error, never an exception, so
one bad line cannot stop an import."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.imports.mapping import MappingError, csv_row_to_message

FORMATS = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".csv": "csv"}
# The largest field limit csv takes everywhere (a C long): a record's memory is its size.
_NO_FIELD_LIMIT = 2**31 - 1


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


def read_rows(
    path: Path,
    delimiter: str = ",",
    *,
    from_csv: Callable[[dict[str, Any]], dict[str, Any]] = csv_row_to_message,
    from_json: Callable[[Any], dict[str, Any]] | None = None,
) -> Iterator[Row]:
    """The file's rows as calls: CSV records through ``from_csv``, NDJSON lines (parsed)
    through ``from_json`` (default: the line is the call). A ``MappingError`` from either
    makes that row an error row."""
    for line, raw in raw_records(path, delimiter):
        if isinstance(raw, dict):  # CSV record
            key = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
            convert: Callable[[Any], dict[str, Any]] = from_csv
            value: Any = raw
        else:
            key = raw.encode()
            convert = from_json or _one_object
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield Row(line, None, f"not valid JSON: {exc.msg}", key)
                continue
        try:
            yield Row(line, convert(value), None, key)
        except MappingError as exc:
            yield Row(line, None, str(exc), key)


def _one_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MappingError("a line must hold one JSON object")
    return value


def raw_records(path: Path, delimiter: str) -> Iterator[tuple[int, str | dict[str, str]]]:
    """``(line, text)`` per NDJSON line, or ``(line, record)`` per CSV record."""
    if file_format(path) == "ndjson":
        with path.open(encoding="utf-8-sig", errors="replace") as lines:
            for number, text in enumerate(lines, start=1):
                if text.strip():
                    yield number, text.strip()
        return
    # csv raises at a field over its limit (128 KiB by default), and cannot go on at the next
    # record: the rest of a quoted field would be read as records. Lifted (process-wide;
    # nothing else here reads CSV), such a cell is the row's, which is refused as any event
    # over the tracking API's size limit is (app.ingest.service.unstorable).
    csv.field_size_limit(_NO_FIELD_LIMIT)
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter, restkey="__extra__")
        for record in reader:
            # line_num is the physical line where the record ended (quoted newlines).
            yield reader.line_num, dict(record)
