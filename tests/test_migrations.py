"""Migrations build the schema on an empty database and take it all down again."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import uuid

import asyncpg
import pytest

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
