"""Dead letters: messages the pipeline can never store, kept with the reason — in the
``dead_letters`` table (same transaction as the batch) and on the dead-letter topic.

A letter is known by its origin: the record's topic, partition and offset, and for one call
of a batch envelope that call's position among the envelope's items (``item``; -1 for a
whole record). A redelivered batch (after a crash, a failed offset commit, or a part of it
that failed while another committed) has the same letters: each is stored once, and goes on
the topic once it is stored, until it has been published (``published_at``), so that a crash
between the two loses none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from app.pipeline.handler import Record

# A letter of a whole record (a touchpoint, or an envelope that cannot be opened).
WHOLE = -1

Origin = tuple[str, int, int, int]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes
    reason: str
    item: int = WHOLE

    @classmethod
    def of(
        cls, record: Record, reason: str, payload: bytes | None = None, item: int = WHOLE
    ) -> DeadLetter:
        """The letter of ``record``, or of one event of it (``payload``: an envelope's, the
        call at ``item`` among its items)."""
        value = record.value if payload is None else payload
        return cls(record.topic, record.partition, record.offset, record.key, value, reason, item)

    @property
    def origin(self) -> Origin:
        return self.topic, self.partition, self.offset, self.item

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("percorso-reason", self.reason.encode()[:1000]),
            ("percorso-origin", f"{self.topic}/{self.partition}/{self.offset}".encode()),
        ]
        if self.item != WHOLE:
            headers.append(("percorso-item", str(self.item).encode()))
        return headers


# A letter stored before comes back (a no-op update) while it has not been published.
_INSERT = """
    INSERT INTO dead_letters AS d (topic, partition, "offset", item, key, payload, reason)
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::bytea[],
                         $6::bytea[], $7::text[])
    ON CONFLICT (topic, partition, "offset", item) DO UPDATE SET published_at = NULL
    WHERE d.published_at IS NULL
    RETURNING topic, partition, "offset", item
"""
_PUBLISHED = """
    UPDATE dead_letters SET published_at = now()
    WHERE (topic, partition, "offset", item) IN (
        SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[])
    )
"""


async def insert_dead_letters(
    conn: asyncpg.Connection[Any], letters: Sequence[DeadLetter]
) -> list[DeadLetter]:
    """Store the letters not stored yet (one of each origin); returns those the dead-letter
    topic is still to get: just stored, or stored before and never marked published (the
    consumer stopped between the commit and :func:`mark_published`). Letters stored and
    published before are left as they are."""
    if not letters:
        return []
    unique = list({d.origin: d for d in letters}.values())
    columns = zip(*((*d.origin, d.key, d.payload, d.reason) for d in unique), strict=True)
    pending = {tuple(r) for r in await conn.fetch(_INSERT, *map(list, columns))}
    return [d for d in unique if d.origin in pending]


async def mark_published(conn: asyncpg.Connection[Any], letters: Sequence[DeadLetter]) -> None:
    """Note that ``letters`` are on the dead-letter topic: a redelivery leaves them there."""
    if letters:
        columns = zip(*(d.origin for d in letters), strict=True)
        await conn.execute(_PUBLISHED, *map(list, columns))
