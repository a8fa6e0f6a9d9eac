"""Dead letters: messages the pipeline can never store, kept with the reason — in the
``dead_letters`` table (same transaction as the batch) and on the dead-letter topic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from app.pipeline.handler import Record


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes
    reason: str

    @classmethod
    def of(cls, record: Record, reason: str, payload: bytes | None = None) -> DeadLetter:
        """The letter of ``record``, or of one event of it (``payload``: an envelope's)."""
        value = record.value if payload is None else payload
        return cls(record.topic, record.partition, record.offset, record.key, value, reason)

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("percorso-reason", self.reason.encode()[:1000]),
            ("percorso-origin", f"{self.topic}/{self.partition}/{self.offset}".encode()),
        ]


async def insert_dead_letters(conn: asyncpg.Connection[Any], letters: Sequence[DeadLetter]) -> None:
    if letters:
        await conn.executemany(
            'INSERT INTO dead_letters (topic, partition, "offset", key, payload, reason)'
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [(d.topic, d.partition, d.offset, d.key, d.payload, d.reason) for d in letters],
        )
