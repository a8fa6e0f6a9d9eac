"""Driving the pipeline's batch handler directly (fast, deterministic) and reading back a
customer's stored journey; `expected` is the oracle the stored journey must equal."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from app.identity.policy import DEFAULT_POLICY
from app.journey.model import JourneyModel, load_model
from app.journey.rules import EventFacts
from app.pipeline.handler import BatchHandler, Record
from app.touchpoint import Touchpoint


async def feed(
    pool: asyncpg.Pool[Any], model: JourneyModel | str, *batches: Sequence[Touchpoint]
) -> None:
    """Run each batch through the pipeline's handler (one transaction per batch)."""
    loaded = load_model(model) if isinstance(model, str) else model
    handler = BatchHandler(pool, loaded, DEFAULT_POLICY)
    for batch in batches:
        records = [
            Record("touchpoints", 0, offset, None, tp.to_bytes()) for offset, tp in enumerate(batch)
        ]
        outcome = await handler.handle(records)
        assert not outcome.dead_letters, outcome.dead_letters
        assert outcome.stored == len(batch)


@dataclass
class Journey:
    """A customer's journey as stored: what the read API and the timeline serve."""

    customer_id: uuid.UUID
    current_stage: str | None
    furthest_stage: str | None
    journey_model: str | None
    state: dict[str, Any]
    # (event, stage) in time order
    stages: list[tuple[str | None, str | None]]
    # (from, to, entered_at, exited_at, event, channel, rule) oldest first
    transitions: list[tuple[Any, ...]]

    @property
    def path(self) -> list[str]:
        """The stages entered, in order (e.g. ['awareness', 'interest', ...])."""
        return [t[1] for t in self.transitions]

    def history(self) -> tuple[Any, ...]:
        """Everything but the customer's id: equal for two customers with equal histories."""
        return (
            self.current_stage,
            self.furthest_stage,
            self.journey_model,
            self.state,
            self.stages,
            self.transitions,
        )


async def customer_of(pool: asyncpg.Pool[Any], user_id: str) -> uuid.UUID:
    async with pool.acquire() as conn:
        cid = await conn.fetchval(
            "SELECT customer_id FROM identities WHERE kind = 'user_id' AND value = $1", user_id
        )
        assert cid is not None, f"no customer with user_id {user_id}"
        while (
            survivor := await conn.fetchval("SELECT merged_into FROM customers WHERE id = $1", cid)
        ) is not None:
            cid = survivor
        return uuid.UUID(str(cid))


async def journey(pool: asyncpg.Pool[Any], user_id: str) -> Journey:
    cid = await customer_of(pool, user_id)
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT current_stage, furthest_stage, journey_model, journey_state"
            " FROM customers WHERE id = $1",
            cid,
        )
        events = await conn.fetch(
            "SELECT event, stage FROM events WHERE customer_id = $1 ORDER BY occurred_at, event_id",
            cid,
        )
        transitions = await conn.fetch(
            "SELECT from_stage, to_stage, entered_at, exited_at, event, channel, rule_id"
            " FROM stage_transitions WHERE customer_id = $1 ORDER BY entered_at, event_id",
            cid,
        )
    return Journey(
        customer_id=cid,
        current_stage=row["current_stage"],
        furthest_stage=row["furthest_stage"],
        journey_model=row["journey_model"],
        state=orjson.loads(row["journey_state"]),
        stages=[(e["event"], e["stage"]) for e in events],
        transitions=[tuple(t) for t in transitions],
    )


def expected(model: JourneyModel, touchpoints: Iterable[Touchpoint]) -> dict[str, Any]:
    """The oracle: the pure engine's replay of the events in (occurred_at, event_id) order,
    and the transitions that follow from it."""
    ordered = sorted(touchpoints, key=lambda tp: (tp.occurred_at, tp.event_id))
    state, results = model.replay(
        EventFacts(tp.type, tp.event, tp.channel.value, tp.properties, tp.flags) for tp in ordered
    )
    stages: list[tuple[str | None, str | None]] = []
    transitions: list[list[Any]] = []
    current: str | None = None
    for tp, result in zip(ordered, results, strict=True):
        if result.changed:
            if transitions:
                transitions[-1][3] = tp.occurred_at
            transitions.append(
                [
                    result.previous_stage,
                    result.stage,
                    tp.occurred_at,
                    None,
                    tp.event,
                    tp.channel.value,
                    result.rule_id,
                ]
            )
        if result.stage is not None:
            current = result.stage
        stages.append((tp.event, current))
    return {
        "current_stage": state.current_stage,
        "furthest_stage": state.furthest_stage,
        "state": state.to_json(),
        "stages": stages,
        "transitions": [tuple(t) for t in transitions],
    }


def assert_matches(found: Journey, oracle: dict[str, Any], model: JourneyModel) -> None:
    assert found.stages == oracle["stages"]
    assert found.transitions == oracle["transitions"]
    assert found.current_stage == oracle["current_stage"]
    assert found.furthest_stage == oracle["furthest_stage"]
    assert found.state == oracle["state"]
    assert found.journey_model == model.fingerprint()
