"""Migrations build the schema on an empty database and take it all down again."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import uuid
import warnings

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app import models  # noqa: F401  (registers the tables on Base.metadata)
from app.config import to_asyncpg_url
from app.db import Base
from app.kit import embedded
from app.migrate import downgrade, upgrade


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        functions = await conn.fetch("SELECT proname FROM pg_proc WHERE proname LIKE 'percorso_%'")
        return {r["tablename"] for r in rows} | {f"fn:{r['proname']}" for r in functions}
    finally:
        await conn.close()


@pytest.fixture
def empty_database(pg_admin_url: str):  # type: ignore[no-untyped-def]
    name = f"percorso_migrations_{secrets.token_hex(3)}"
    asyncio.run(embedded.ensure_database(pg_admin_url, name))
    yield embedded.with_database(pg_admin_url, name)
    asyncio.run(embedded.drop_database(pg_admin_url, name))


def test_migrations_upgrade_an_empty_database_and_downgrade_cleanly(empty_database: str) -> None:
    upgrade(empty_database)
    created = asyncio.run(_tables(empty_database))
    assert {"customers", "identities", "events", "sources", "api_tokens", "dead_letters"} <= created
    assert "fn:percorso_touch_change_xid" in created

    downgrade(empty_database, "base")
    assert asyncio.run(_tables(empty_database)) == {"alembic_version"}

    upgrade(empty_database)  # and up again: downgrade left nothing behind that blocks it
    assert asyncio.run(_tables(empty_database)) == created


async def _drift(url: str) -> list[object]:
    def compare(connection: Connection) -> list[object]:
        # As migrations/env.py configures Alembic for `alembic check` and autogenerate.
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        with warnings.catch_warnings():
            warnings.simplefilter("error", exc.SAWarning)  # a column type not recognised
            return list(compare_metadata(context, Base.metadata))

    engine = create_async_engine(to_asyncpg_url(url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


def test_the_models_match_the_migrated_schema(empty_database: str) -> None:
    """`alembic check` passes, and `alembic revision --autogenerate` proposes nothing (it
    proposed dropping customers.change_xid and its index, the changes feed's cursor)."""
    upgrade(empty_database)
    assert asyncio.run(_drift(empty_database)) == []


async def _run(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def test_0008_keeps_the_first_of_each_dead_letter_stored_again(empty_database: str) -> None:
    """Before 0008 a redelivered batch stored its dead letters again; a call the database
    refused was rebuilt with another event_id each time."""

    def refused(event_id: str) -> bytes:
        return b'{"schema_version":1,"event_id":"%s","message_id":"poison"}' % event_id.encode()

    letters = [
        (7, b"\x00junk", "undecodable touchpoint: not JSON"),
        (8, b'{"messageId":"a"}', "call not built: userId: blocked"),
        (8, b'{"messageId":"b"}', "call not built: userId: blocked"),
        (8, refused("01a21100-09e8-76a3-8a83-360ceedbfa6b"), "refused by the database: NUL"),
        # The same batch again, and the first record once more by a consumer that words it
        # differently.
        (7, b"\x00junk", "undecodable touchpoint: not JSON"),
        (8, b'{"messageId":"a"}', "call not built: userId: blocked"),
        (8, b'{"messageId":"b"}', "call not built: userId: blocked"),
        (8, refused("01a21100-09e8-76a3-8a83-ffffffffffff"), "refused by the database: NUL"),
        (7, b"\x00junk", "undecodable touchpoint: unexpected byte"),
    ]
    upgrade(empty_database, "0007")
    for offset, payload, reason in letters:
        asyncio.run(
            _run(
                empty_database,
                'INSERT INTO dead_letters (topic, partition, "offset", payload, reason)'
                " VALUES ('touchpoints', 0, $1, $2, $3)",
                offset,
                payload,
                reason,
            )
        )

    upgrade(empty_database)
    kept = asyncio.run(
        _run(
            empty_database,
            'SELECT id, "offset", item, published_at IS NOT NULL AS published'
            " FROM dead_letters ORDER BY id",
        )
    )
    assert [tuple(r) for r in kept] == [
        (1, 7, -1, True),  # a whole record
        (2, 8, None, True),  # calls of an envelope, at places not known
        (3, 8, None, True),
        (4, 8, None, True),
    ]
    downgrade(empty_database, "0007")
    assert asyncio.run(_run(empty_database, "SELECT count(*) FROM dead_letters"))[0][0] == 4


def test_0008_flattens_merge_chains_and_leaves_cycles(empty_database: str) -> None:
    """Before 0008 a merge re-pointed only the loser, so customers merged in a row formed
    chains; each now points at its survivor. A cycle (never written by Percorso) has none."""
    upgrade(empty_database, "0007")
    chain = [uuid.uuid4() for _ in range(20)]  # each merged into the one before it
    branch, cycle, into_cycle = uuid.uuid4(), [uuid.uuid4(), uuid.uuid4()], uuid.uuid4()
    merged_into = {
        **{c: before for before, c in itertools.pairwise(chain)},
        branch: chain[5],
        cycle[0]: cycle[1],
        cycle[1]: cycle[0],
        into_cycle: cycle[0],
    }
    asyncio.run(
        _run(
            empty_database,
            "INSERT INTO customers (id, first_seen_at, last_seen_at)"
            " SELECT id, now(), now() FROM unnest($1::uuid[]) AS id",
            [chain[0], *merged_into],
        )
    )
    for customer, survivor in merged_into.items():
        asyncio.run(
            _run(
                empty_database,
                "UPDATE customers SET merged_into = $2 WHERE id = $1",
                customer,
                survivor,
            )
        )

    upgrade(empty_database)
    rows = asyncio.run(_run(empty_database, "SELECT id, merged_into FROM customers"))
    flattened = {r["id"]: r["merged_into"] for r in rows}
    assert flattened == {
        chain[0]: None,
        **dict.fromkeys([*chain[1:], branch], chain[0]),
        cycle[0]: cycle[1],
        cycle[1]: cycle[0],
        into_cycle: cycle[0],
    }
    index = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_customers_merged_into'"
    (found,) = asyncio.run(_run(empty_database, index))
    assert found["indexdef"].endswith("WHERE (merged_into IS NOT NULL)")
    downgrade(empty_database, "0007")
    assert asyncio.run(_run(empty_database, index)) == []


def test_0009_puts_email_identities_in_nfc_where_that_form_is_free(empty_database: str) -> None:
    """Before 0009 an address typed with "e" and a combining accent (NFD) was stored so, and
    made an identity apart from the same address typed with "é" (NFC)."""
    upgrade(empty_database, "0008")
    nfd = "jose\u0301@example.com"
    taken = ("zoe\u0308@example.com", "zo\u00eb@example.com")  # NFD, and its NFC owned
    # Two spellings, neither NFC, of "nguyễn@example.vn"; the older gets it.
    twins = ("nguye\u0302\u0303n@example.vn", "nguy\u00ea\u0303n@example.vn")
    identities = [
        ("email", nfd, 0),
        ("email", taken[0], 1),
        ("email", taken[1], 0),
        ("email", twins[0], 3),
        ("email", twins[1], 2),
        ("email", "ada@example.com", 0),
        ("user_id", "jose\u0301", 0),  # an opaque id keeps its form
    ]
    customers = [uuid.uuid4() for _ in identities]
    asyncio.run(
        _run(
            empty_database,
            "INSERT INTO customers (id, first_seen_at, last_seen_at, updated_at)"
            " SELECT id, now(), now(), '2026-01-01' FROM unnest($1::uuid[]) AS id",
            customers,
        )
    )
    for customer, (kind, value, day) in zip(customers, identities, strict=True):
        asyncio.run(
            _run(
                empty_database,
                "INSERT INTO identities (kind, value, customer_id, created_at)"
                " VALUES ($1, $2, $3, '2026-01-01'::date + $4::int)",
                kind,
                value,
                customer,
                day,
            )
        )
    xids = "SELECT id, change_xid::text AS xid FROM customers"
    before = {r["id"]: r["xid"] for r in asyncio.run(_run(empty_database, xids))}

    def stored() -> dict[uuid.UUID, tuple[str, str]]:
        rows = asyncio.run(_run(empty_database, "SELECT kind, value, customer_id FROM identities"))
        return {r["customer_id"]: (r["kind"], r["value"]) for r in rows}

    upgrade(empty_database)
    upgraded = stored()
    assert upgraded == {
        customers[0]: ("email", "jos\u00e9@example.com"),
        customers[1]: ("email", taken[0]),  # left: the NFC form is another customer's
        customers[2]: ("email", taken[1]),
        customers[3]: ("email", twins[0]),  # left: the older twin took the NFC form
        customers[4]: ("email", "nguy\u1ec5n@example.vn"),
        customers[5]: ("email", "ada@example.com"),
        customers[6]: ("user_id", "jose\u0301"),
    }
    touched = "SELECT id, change_xid::text AS xid, updated_at > '2026-01-01' AS touched"
    after = asyncio.run(_run(empty_database, f"{touched} FROM customers"))
    # The changes feed reports the customers whose identity changed, and only them.
    assert {r["id"] for r in after if r["touched"]} == {customers[0], customers[4]}
    assert {r["id"] for r in after if r["xid"] != before[r["id"]]} == {customers[0], customers[4]}

    downgrade(empty_database, "0008")
    assert stored() == upgraded  # the forms the values had are not kept
