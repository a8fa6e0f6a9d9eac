"""Rows as one JSON parameter (app.kit.bulk) come back from Postgres as the values sent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import orjson
import pytest

from app.kit import bulk

COLUMNS = "id uuid, at timestamptz, n bigint, ok bool, name text, doc jsonb"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    connection = await asyncpg.connect(
        database_url.replace("postgresql+asyncpg://", "postgresql://")
    )
    yield connection
    await connection.close()


async def _round_trip(conn: asyncpg.Connection[Any], values: list[tuple[Any, ...]]) -> list[Any]:
    found = await conn.fetch(
        f"SELECT * FROM {bulk.rows_from('$1', COLUMNS)} AS u",
        bulk.rows(values),
    )
    return [tuple(r) for r in found]


async def test_every_kind_of_value_comes_back_as_sent_in_order(
    conn: asyncpg.Connection[Any],
) -> None:
    stored_id = await conn.fetchval("SELECT gen_random_uuid()")  # asyncpg's own UUID type
    rome = timezone(timedelta(hours=1))
    values = [
        (uuid.uuid4(), datetime(2026, 11, 1, 9, 0, 0, 123456, tzinfo=UTC), 2**62, True,
         'quote " backslash \\ brace { comma , ünïcödé \u2028', {"a": [1, 2.5, None]}),
        (stored_id, datetime(2026, 11, 1, 10, 0, tzinfo=rome), -1, False, "", {}),
        (uuid.uuid4(), None, None, None, None, None),
        (uuid.uuid4(), datetime(2026, 11, 1, 9, 0), 0, True, "naive is UTC",
         orjson.Fragment(b'{"written": "before"}')),
    ]  # fmt: skip
    back = await _round_trip(conn, values)
    assert [r[0] for r in back] == [uuid.UUID(str(v[0])) for v in values]
    assert back[0][1:5] == values[0][1:5]
    assert orjson.loads(back[0][5]) == {"a": [1, 2.5, None]}
    assert back[1][1] == datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    assert back[1][2:] == (-1, False, "", "{}")
    assert back[2][1:] == (None, None, None, None, None), "JSON null is SQL NULL"
    assert back[3][1] == datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    assert orjson.loads(back[3][5]) == {"written": "before"}


async def test_no_rows_is_no_rows(conn: asyncpg.Connection[Any]) -> None:
    assert await _round_trip(conn, []) == []


def test_a_value_it_does_not_know_is_refused_before_the_database() -> None:
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        bulk.rows([(object(),)])


async def test_a_nul_in_text_is_refused_as_bad_data(conn: asyncpg.Connection[Any]) -> None:
    # The pipeline dead-letters what the database refuses as a DataError, as with arrays.
    with pytest.raises(asyncpg.DataError):
        await _round_trip(conn, [(uuid.uuid4(), None, None, None, "a\x00b", None)])


def test_columns_become_typed_expressions_of_the_parameter() -> None:
    sql = bulk.rows_from("$2", "id uuid, doc jsonb")
    assert sql == (
        "(SELECT (r ->> 0)::uuid AS id, nullif(r -> 1, 'null') AS doc"
        " FROM jsonb_array_elements($2::jsonb) AS r OFFSET 0)"
    )
