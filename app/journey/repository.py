"""SQL of journey state (asyncpg; the pipeline batch owns the transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

from app.journey.model import JourneyState


async def save_states(
    conn: asyncpg.Connection[Any], states: Mapping[uuid.UUID, JourneyState]
) -> None:
    if not states:
        return
    ids = sorted(states)
    await conn.execute(
        """
        UPDATE customers c
        SET current_stage = u.current_stage, furthest_stage = u.furthest_stage,
            journey_state = u.state::jsonb
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
             AS u(id, current_stage, furthest_stage, state)
        WHERE c.id = u.id
        """,
        ids,
        [states[i].current_stage for i in ids],
        [states[i].furthest_stage for i in ids],
        [orjson.dumps(states[i].to_json()).decode() for i in ids],
    )
