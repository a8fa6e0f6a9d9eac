"""The pipeline's profile writes (app.customers.writes), through the batch handler on the real
database: per trait, the newest value wins, whether it comes from the batch's events, a
profile merged in, or the profile as stored; an older value only fills a missing key."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.ingest.service import unstorable
from tests.factories import T0, touchpoint
from tests.helpers import scalar


def _identify(source_id: uuid.UUID, at: int, traits: dict[str, Any], **ids: Any) -> Any:
    return touchpoint(source_id, type="identify", event=None, traits=traits, at=at, **ids)


async def _survivor(db: AsyncEngine) -> tuple[dict[str, Any], Any]:
    """The traits and traits_at of the one customer not merged away."""
    assert await scalar(db, "SELECT count(*) FROM customers WHERE merged_into IS NULL") == 1
    traits = await scalar(db, "SELECT traits FROM customers WHERE merged_into IS NULL")
    return traits, await scalar(db, "SELECT traits_at FROM customers WHERE merged_into IS NULL")


async def test_traits_as_deeply_nested_as_the_api_accepts_go_into_new_and_known_profiles(
    handle: Any, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    """254 levels, the most orjson writes, is the API's limit for a whole call: its traits
    may be 253 deep."""

    def nested(key: str) -> dict[str, Any]:
        traits: dict[str, Any] = {}
        for _ in range(252):
            traits = {key: traits}
        return traits  # 253 levels, the innermost empty

    first, second = nested("a"), nested("b")
    assert unstorable({"type": "identify", "userId": "ada", "traits": first}) is None
    await handle([_identify(source_id, 1, first, user_id="ada")])  # a new profile
    await handle([_identify(source_id, 2, second, user_id="ada")])  # a known one
    traits, _ = await _survivor(db)
    assert traits == {**first, **second}
    assert await scalar(db, "SELECT event_count FROM customers") == 2


async def test_a_merged_profiles_older_traits_only_fill_the_survivors_missing_keys(
    handle: Any, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    """The survivor's plan (set at t5) stands against the merged-away customer's older one
    (t3), although the event that links them (t10) is newer than both."""
    await handle([_identify(source_id, 5, {"plan": "pro"}, user_id="u1")])
    await handle([_identify(source_id, 3, {"plan": "free", "company": "Acme"}, anonymous_id="a")])
    await handle(
        [_identify(source_id, 10, {"email": "ada@example.com"}, user_id="u1", anonymous_id="a")]
    )
    traits, traits_at = await _survivor(db)
    assert traits == {"plan": "pro", "company": "Acme", "email": "ada@example.com"}
    assert traits_at == T0 + timedelta(seconds=10)


async def test_a_merged_profiles_newer_traits_overwrite_the_survivors_and_older_events(
    handle: Any, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    """The merged-away plan (t8) is newer than the survivor's (t5) and than an event of the
    linking batch (t6): it wins, whatever order the batch meets them in."""
    await handle([_identify(source_id, 5, {"plan": "pro"}, user_id="u1")])
    await handle([_identify(source_id, 8, {"plan": "enterprise"}, anonymous_id="a")])
    await handle(
        [
            _identify(source_id, 6, {"plan": "team"}, user_id="u1"),
            _identify(source_id, 10, {"email": "ada@example.com"}, user_id="u1", anonymous_id="a"),
        ]
    )
    traits, _ = await _survivor(db)
    assert traits == {"plan": "enterprise", "email": "ada@example.com"}


async def test_a_late_events_traits_only_fill_missing_keys_beside_a_newer_event(
    handle: Any, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    await handle([_identify(source_id, 5, {"plan": "pro"}, user_id="u1")])
    await handle(
        [
            _identify(source_id, 3, {"plan": "free", "company": "Acme"}, user_id="u1"),
            _identify(source_id, 10, {"email": "ada@example.com"}, user_id="u1"),
        ]
    )
    traits, traits_at = await _survivor(db)
    assert traits == {"plan": "pro", "company": "Acme", "email": "ada@example.com"}
    assert traits_at == T0 + timedelta(seconds=10)


async def test_a_newer_events_traits_overwrite_the_stored_ones(
    handle: Any, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    await handle([_identify(source_id, 5, {"plan": "pro", "company": "Acme"}, user_id="u1")])
    await handle(
        [
            _identify(source_id, 3, {"plan": "free"}, user_id="u1"),
            _identify(source_id, 7, {"plan": "team"}, user_id="u1"),
            _identify(source_id, 6, {"plan": "basic"}, user_id="u1"),
        ]
    )
    traits, traits_at = await _survivor(db)
    assert traits == {"plan": "team", "company": "Acme"}
    assert traits_at == T0 + timedelta(seconds=7)


async def test_an_identify_calls_context_traits_go_into_the_profile_under_its_own_traits(
    handle: Any, db: AsyncEngine, source_id: uuid.UUID
) -> None:
    """RudderStack's SDKs send an identify call's traits in context.traits alone; a call
    with both gives its own traits the last word, as identifiers are read, and a late one
    only fills missing keys with either. The stored events keep their traits where they
    were sent."""

    def identify(at: int, own: dict[str, Any], in_context: dict[str, Any]) -> Any:
        event = _identify(source_id, at, own, user_id="ada")
        event.context = {"traits": in_context}
        return event

    await handle([identify(1, {}, {"name": "Ada", "plan": "free"})])
    traits, _ = await _survivor(db)
    assert traits == {"name": "Ada", "plan": "free"}
    await handle([identify(2, {"plan": "pro"}, {"plan": "team", "company": "Acme"})])
    await handle([identify(0, {"company": "Old"}, {"plan": "old", "city": "Milano"})])
    traits, traits_at = await _survivor(db)
    assert traits == {"name": "Ada", "plan": "pro", "company": "Acme", "city": "Milano"}
    assert traits_at == T0 + timedelta(seconds=2)
    first = "SELECT traits FROM events WHERE occurred_at = :at"
    assert await scalar(db, first, {"at": T0 + timedelta(seconds=1)}) == {}
