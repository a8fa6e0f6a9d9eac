"""What journey stages cost the pipeline: ``python -m bench.journey_overhead``.

Runs the same touchpoints through `BatchHandler` (no broker, no HTTP) twice per round on a
fresh scratch database: once with the journey step as it was before stage transitions
(states only: `_baseline_plan` / `_baseline_persist`, copied from the first journey seam)
and once as it is, and prints events/s for each. Scenarios: in-order traffic, and the same
traffic with a share of events delivered late (older than events already stored).

Needs ``PERCORSO_DATABASE_URL`` (or ``PERCORSO_TEST_DATABASE_URL``): a server on which it
may create and drop a database.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import random
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from app.config import Settings
from app.db import create_pool
from app.journey import service as journey
from app.journey.model import JourneyModel, JourneyState, load_model
from app.kit import embedded
from app.migrate import upgrade
from app.pipeline.handler import BatchHandler, Record
from app.touchpoint import Channel, Identifier, Touchpoint, new_event_id

T0 = datetime(2026, 11, 1, tzinfo=UTC)
# (event, type, channel, weight): mostly page views and browsing, like real traffic.
MIX = [
    (None, "page", "web", 30),
    ("Products Searched", "track", "web", 8),
    ("Product Viewed", "track", "web", 20),
    ("Product Added", "track", "mobile", 8),
    ("Email Opened", "track", "email", 10),
    ("Email Link Clicked", "track", "email", 4),
    ("Signed Up", "track", "web", 3),
    ("Order Completed", "track", "web", 5),
    ("In-Store Purchase", "track", "in_store", 3),
    ("Support Ticket Opened", "track", "call_center", 2),
    ("Loyalty Joined", "track", "in_store", 2),
    ("Review Submitted", "track", "web", 2),
    ("Post Liked", "track", "social", 3),
]


def workload(
    events: int, customers: int, late: float, seed: int, source_id: uuid.UUID
) -> list[Touchpoint]:
    """`events` touchpoints of `customers` people, delivered in time order except a share
    `late` of them, which arrive at the end (after newer events of the same person)."""
    rng = random.Random(seed)
    weights = [m[3] for m in MIX]
    out: list[Touchpoint] = []
    per_customer = events // customers
    for c in range(customers):
        start = rng.uniform(0, 30 * 86_400)
        for n in range(per_customer):
            name, type_, channel, _ = rng.choices(MIX, weights)[0]
            when = T0 + timedelta(seconds=start + n * rng.uniform(60, 7_200))
            out.append(
                Touchpoint(
                    event_id=new_event_id(),
                    message_id=str(uuid.UUID(int=rng.getrandbits(128))),
                    source_id=source_id,
                    channel=Channel(channel),
                    type=type_,
                    event=name,
                    user_id=f"user-{seed}-{c}",
                    identifiers=[Identifier(kind="user_id", value=f"user-{seed}-{c}")],
                    properties={"sku": f"SKU-{rng.randrange(500)}", "price": 19.9},
                    context={"page": {"path": "/", "title": "Shop"}},
                    occurred_at=when,
                    received_at=when,
                )
            )
    out.sort(key=lambda tp: tp.occurred_at)
    delayed = [tp for tp in out if rng.random() < late]
    delayed_ids = {tp.event_id for tp in delayed}
    return [tp for tp in out if tp.event_id not in delayed_ids] + delayed


def _baseline_plan(model: JourneyModel, touchpoints: Sequence[Touchpoint], resolution: Any) -> Any:
    """The journey step before transitions: step states, stages per event, nothing else."""
    by_customer: dict[uuid.UUID, list[int]] = defaultdict(list)
    for index, cid in enumerate(resolution.customer_of):
        by_customer[cid].append(index)
    stage_of: list[str | None] = [None] * len(touchpoints)
    states: dict[uuid.UUID, JourneyState] = {}
    for cid, indexes in by_customer.items():
        state = JourneyState.from_json(resolution.customers[cid].journey_state)
        indexes.sort(key=lambda i: touchpoints[i].occurred_at)
        for i in indexes:
            model.step(state, journey.facts(touchpoints[i]))
            stage_of[i] = state.current_stage
        states[cid] = state
    return argparse.Namespace(stage_of=stage_of, states=states)


async def _baseline_persist(
    conn: asyncpg.Connection[Any], model: Any, tps: Any, resolution: Any, plan: Any
) -> None:
    ids = sorted(plan.states)
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
        [plan.states[i].current_stage for i in ids],
        [plan.states[i].furthest_stage for i in ids],
        [orjson.dumps(plan.states[i].to_json()).decode() for i in ids],
    )


@contextmanager
def journey_step(before: bool, spent: list[float]) -> Iterator[None]:
    """Use the journey step from before transitions (or the current one), timing both its
    halves into `spent` (seconds)."""
    saved = journey.plan_stages, journey.persist
    plan, persist = (_baseline_plan, _baseline_persist) if before else saved

    def timed_plan(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return plan(*args)
        finally:
            spent.append(time.perf_counter() - started)

    async def timed_persist(*args: Any) -> None:
        started = time.perf_counter()
        try:
            await persist(*args)
        finally:
            spent.append(time.perf_counter() - started)

    journey.plan_stages, journey.persist = timed_plan, timed_persist  # type: ignore[assignment]
    try:
        yield
    finally:
        journey.plan_stages, journey.persist = saved


def handler(pool: asyncpg.Pool[Any], model: JourneyModel) -> BatchHandler:
    # The identity work in progress adds a merge policy argument; work either way.
    if "policy" in inspect.signature(BatchHandler).parameters:
        from app.identity.policy import DEFAULT_POLICY

        return BatchHandler(pool, model, DEFAULT_POLICY)  # type: ignore[call-arg,unused-ignore]
    return BatchHandler(pool, model)  # type: ignore[call-arg,unused-ignore]


async def run_once(
    pool: asyncpg.Pool[Any], model: JourneyModel, tps: list[Touchpoint], batch: int
) -> float:
    """Events per second through the handler, one batch at a time (as one consumer)."""
    async with pool.acquire() as conn:
        await conn.execute(
            "TRUNCATE events, customers, identities, dead_letters, stage_transitions"
            " RESTART IDENTITY CASCADE"
        )
    run = handler(pool, model)
    records = [Record("touchpoints", 0, i, None, tp.to_bytes()) for i, tp in enumerate(tps)]
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        outcome = await run.handle(records[i : i + batch])
        assert not outcome.dead_letters, outcome.dead_letters[:1]
    return len(records) / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    admin = os.environ.get("PERCORSO_DATABASE_URL") or os.environ.get("PERCORSO_TEST_DATABASE_URL")
    if not admin:
        raise SystemExit("set PERCORSO_DATABASE_URL (a server where a database may be created)")
    name = f"percorso_bench_journey_{uuid.uuid4().hex[:8]}"
    await embedded.ensure_database(admin, name)
    url = embedded.with_database(admin, name)
    try:
        await asyncio.to_thread(upgrade, url)
        pool = await create_pool(Settings(database_url=url), size=2)
        source_id = uuid.uuid4()
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO sources (id, name, channel, write_key_hash, write_key_prefix)"
                " VALUES ($1, 'bench', 'web', $2, 'bench')",
                source_id,
                uuid.uuid4().hex,
            )
        model = load_model(args.model)
        print(
            f"{args.events} events, {args.customers} customers, batches of {args.batch}, "
            f"model {model.name}, {args.rounds} rounds (events/s: best, median)"
        )
        print(
            f"{'scenario':<12}{'step':<14}{'events/s':>10}{'(median)':>10}"
            f"{'journey ms/batch':>18}{'journey share':>15}"
        )
        for late in (0.0, args.late):
            tps = workload(args.events, args.customers, late, args.seed, source_id)
            label = "in order" if late == 0 else f"{late:.0%} late"
            rates: dict[bool, list[float]] = {True: [], False: []}
            spent: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.rounds):
                for before in (True, False):
                    with journey_step(before, spent[before]):
                        rates[before].append(await run_once(pool, model, tps, args.batch))
            batches = args.rounds * -(-len(tps) // args.batch)
            for before in (True, False):
                step = "states only" if before else "transitions"
                total = args.rounds * len(tps) / statistics.mean(rates[before])
                journey_s = sum(spent[before])
                print(
                    f"{label:<12}{step:<14}{max(rates[before]):>10,.0f}"
                    f"{statistics.median(rates[before]):>10,.0f}"
                    f"{1000 * journey_s / batches:>18.1f}{journey_s / total:>15.1%}"
                )
        await pool.close()
    finally:
        await embedded.drop_database(admin, name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--late", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="default")
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(main(parser.parse_args()))
