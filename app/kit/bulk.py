"""Many rows as one statement parameter: a JSON array of rows, read back by Postgres.

The pipeline's statements take thousands of rows each. Bound as arrays
(``unnest($1::uuid[], $2::text[], …)``), asyncpg checks every element against
``collections.abc`` to find nested arrays before encoding it, about a microsecond per
element: the consumer's largest single cost. :func:`rows` writes the same rows with orjson,
in C, and the statement reads them with :func:`rows_from`, through each column type's own
input function. (As ``jsonb``: reading fields of ``json`` text, Postgres parses each row
again per field, which cost it twice as much in the pipeline's profile UPDATE.)::

    NEW = f"INSERT INTO t SELECT * FROM {rows_from('$1', 'id uuid, seen timestamptz')}"
    await conn.execute(NEW, rows([(id_, seen) for id_, seen in pairs]))

Values: ``str``, ``int``, ``float``, ``bool``, ``None``, UUIDs (asyncpg's too), aware
datetimes (naive ones are taken as UTC), and for ``jsonb`` columns any JSON value or an
``orjson.Fragment`` of JSON text already written. A JSON ``null`` reads as SQL NULL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from app.kit.jsonvalues import uuid_text


def rows(values: Iterable[Sequence[Any]]) -> str:
    """The rows as one parameter for a statement that reads them with :func:`rows_from`."""
    return orjson.dumps(
        values if isinstance(values, list) else list(values),
        default=uuid_text,
        option=orjson.OPT_NAIVE_UTC,
    ).decode()


def rows_from(param: str, columns: str) -> str:
    """SQL for a ``FROM`` item with the rows of ``param`` (``"$1"``), as the named, typed
    ``columns`` (``"id uuid, seen timestamptz, traits jsonb"``), one row per element in the
    array's order, as ``unnest`` gives them. ``columns`` is part of the statement's text:
    a constant, never data."""
    fields = []
    for index, column in enumerate(columns.split(",")):
        name, type_ = column.split()
        if type_ == "jsonb":
            fields.append(f"nullif(r -> {index}, 'null') AS {name}")
        else:
            fields.append(f"(r ->> {index})::{type_} AS {name}")
    select = ", ".join(fields)
    return f"(SELECT {select} FROM jsonb_array_elements({param}::jsonb) AS r OFFSET 0)"  # noqa: S608
