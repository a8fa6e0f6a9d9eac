"""A batch split into parts that share no customer, identifier or message: the parts
are stored side by side, and the result is that of the batch in one transaction."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import create_pool
from app.identity import service as identity
from app.identity.policy import ReferenceGraph
from app.identity.service import current_owners, independent_parts
from app.pipeline import handler as handler_module
from app.touchpoint import Touchpoint
from tests.factories import touchpoint


def _idents(tp: Touchpoint) -> set[tuple[str, str]]:
    return {(i.kind, i.value) for i in tp.identifiers}


async def test_parts_share_no_identifier_message_or_stored_customer(
    settings: Settings, handle: Any, source_id: uuid.UUID
) -> None:
    # Stored: one person known by a device and a login.
    await handle([touchpoint(source_id, user_id="ada", anonymous_id="ada-laptop", at=0)])
    linked = [  # no identifier in common, but one stored customer
        touchpoint(source_id, anonymous_id="ada-laptop", at=10),
        touchpoint(source_id, user_id="ada", at=20),
    ]
    twice = [  # one message delivered twice, without identifiers in common
        touchpoint(source_id, anonymous_id="dev-1", message_id="m-1", at=30),
        touchpoint(source_id, anonymous_id="dev-2", message_id="m-1", at=30),
    ]
    chained = [  # linked through the batch's own events
        touchpoint(source_id, anonymous_id="bob-phone", at=40),
        touchpoint(source_id, anonymous_id="bob-phone", user_id="bob", at=50),
        touchpoint(source_id, user_id="bob", extra_ids=[("email", "bob@example.com")], at=60),
    ]
    loners = [touchpoint(source_id, anonymous_id=f"visitor-{n}", at=70 + n) for n in range(9)]
    batch = [*linked, *twice, *chained, *loners]
    random.Random(7).shuffle(batch)

    pool = await create_pool(settings)
    try:
        async with pool.acquire() as conn:
            owners = await current_owners(conn, batch)
        parts = independent_parts(batch, owners, 2)
    finally:
        await pool.close()

    assert len(parts) == 2
    assert sorted(len(p) for p in parts) == [8, 8]  # balanced by events
    assert sorted(tp.event_id for p in parts for tp in p) == sorted(tp.event_id for tp in batch)
    for part in parts:  # each part keeps the batch's order
        assert part == [tp for tp in batch if tp in part]
    for group in (linked, twice, chained):
        assert any(all(tp in part for tp in group) for part in parts), group
    first, second = ({i for tp in p for i in _idents(tp)} for p in parts)
    assert not first & second


async def test_a_batch_stored_in_parts_equals_processing_it_event_by_event(
    monkeypatch: pytest.MonkeyPatch, handle: Any, source_id: uuid.UUID, db: AsyncEngine
) -> None:
    rng = random.Random(11)
    batch = []
    for n in range(60):
        ids = [("anonymous_id", f"dev-{rng.randrange(15)}")]
        if rng.random() < 0.4:
            ids.append(("user_id", f"user-{rng.randrange(8)}"))
        if rng.random() < 0.2:
            ids.append(("email", f"p{rng.randrange(8)}@example.com"))
        batch.append(touchpoint(source_id, extra_ids=ids, at=n, message_id=f"m-{n}"))
    sizes: list[list[int]] = []

    def recorded(*args: Any) -> list[list[Touchpoint]]:
        parts = independent_parts(*args)
        sizes.append([len(p) for p in parts])
        return parts

    monkeypatch.setattr(handler_module, "SPLIT_MIN", 2)
    monkeypatch.setattr(identity, "independent_parts", recorded)
    outcome = await handle(batch)
    again = await handle(batch[:10])  # redelivered: all duplicates

    assert len(sizes) == 2
    assert all(len(s) == 2 for s in sizes), sizes
    assert (outcome.stored, outcome.duplicates, again.stored, again.duplicates) == (60, 0, 0, 10)
    reference = ReferenceGraph()
    for tp in batch:
        reference.process(tp.identifiers)
    expected = {
        frozenset((kind, value) for kind, values in kinds.items() for value in values)
        for kinds in reference.customers().values()
    }
    async with db.connect() as conn:
        rows = (await conn.execute(text("SELECT kind, value, customer_id FROM identities"))).all()
        counted = await conn.scalar(text("SELECT sum(event_count) FROM customers"))
    stored: dict[Any, set[tuple[str, str]]] = {}
    for kind, value, customer in rows:
        stored.setdefault(customer, set()).add((kind, value))
    assert {frozenset(s) for s in stored.values()} == expected
    assert counted == 60


async def test_a_part_the_database_refuses_leaves_the_other_parts_stored_once(
    monkeypatch: pytest.MonkeyPatch, handle: Any, source_id: uuid.UUID, db: AsyncEngine
) -> None:
    monkeypatch.setattr(handler_module, "SPLIT_MIN", 2)
    batch = [touchpoint(source_id, anonymous_id=f"dev-{n}", at=n) for n in range(6)]
    # Valid JSON that PostgreSQL refuses in jsonb: its part fails, the others commit.
    batch[3] = touchpoint(source_id, anonymous_id="dev-3", properties={"note": "a\u0000b"}, at=3)

    outcome = await handle(batch)

    assert outcome.stored == 5
    assert [d.reason.split(":")[0] for d in outcome.dead_letters] == ["refused by the database"]
    async with db.connect() as conn:
        stored = await conn.scalar(text("SELECT count(*) FROM events"))
        letters = await conn.scalar(text("SELECT count(*) FROM dead_letters"))
    assert (stored, letters) == (5, 1)
