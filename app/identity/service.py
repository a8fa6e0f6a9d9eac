"""Resolving a batch of touchpoints to customers.

Guarantees (per batch, inside the caller's transaction):
* Locks are taken in one global order — identifier stripes (ascending), then customer rows
  (ascending id) — so concurrent consumers never deadlock on each other.
* Reads made before a lock are validated after it: if a customer we matched was merged
  away meanwhile, :class:`StaleRead` is raised and the caller retries the batch.
* Events are resolved one by one in batch order, so the result equals processing them
  sequentially.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from app.identity import repository
from app.touchpoint import Touchpoint, new_event_id


class StaleRead(Exception):
    """A customer read before locking changed before the lock was granted; retry."""


@dataclass(slots=True)
class CustomerState:
    id: uuid.UUID
    created_at: datetime | None
    current_stage: str | None
    furthest_stage: str | None
    journey_state: dict[str, Any]
    is_new: bool = False


@dataclass(slots=True)
class Resolution:
    customer_of: list[uuid.UUID]
    customers: dict[uuid.UUID, CustomerState] = field(default_factory=dict)
    # Customers whose journey must be recomputed from their whole timeline once the batch's
    # events are written (merge survivors: two journeys combined as if one from the start).
    replay: set[uuid.UUID] = field(default_factory=set)


def identifier_keys(touchpoints: Sequence[Touchpoint]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((i.kind, i.value) for tp in touchpoints for i in tp.identifiers))


async def lock(conn: asyncpg.Connection[Any], touchpoints: Sequence[Touchpoint]) -> None:
    """Lock every identifier of the batch. Call first: dedupe and resolution read under it."""
    await repository.lock_identifiers(conn, identifier_keys(touchpoints))


async def resolve(conn: asyncpg.Connection[Any], touchpoints: Sequence[Touchpoint]) -> Resolution:
    """Assign each touchpoint a customer, creating customers and identities as needed."""
    keys = identifier_keys(touchpoints)
    owner = await repository.owners(conn, keys)
    rows = await repository.lock_customers(conn, owner.values())
    known = {r["id"]: r for r in rows}
    if len(known) != len(set(owner.values())) or any(r["merged_into"] for r in rows):
        raise StaleRead("a matched customer was merged while the batch waited for its lock")

    customers = {
        cid: CustomerState(
            id=cid,
            created_at=r["created_at"],
            current_stage=r["current_stage"],
            furthest_stage=r["furthest_stage"],
            journey_state=_json(r["journey_state"]),
        )
        for cid, r in known.items()
    }
    new_customers: list[tuple[uuid.UUID, datetime]] = []
    new_identities: list[tuple[str, str, uuid.UUID]] = []
    customer_of: list[uuid.UUID] = []
    for tp in touchpoints:
        matched = list(
            dict.fromkeys(owner[k] for i in tp.identifiers if (k := (i.kind, i.value)) in owner)
        )
        if matched:
            # Merging several matched customers is the identity graph's next step; until
            # then the event joins the oldest and only unowned identifiers are attached.
            cid = min(
                matched,
                key=lambda c: (customers[c].is_new, customers[c].created_at or tp.received_at, c),
            )
        else:
            cid = new_event_id()
            customers[cid] = CustomerState(cid, None, None, None, {}, is_new=True)
            new_customers.append((cid, tp.occurred_at))
        for ident in tp.identifiers:
            key = (ident.kind, ident.value)
            if key not in owner:
                owner[key] = cid
                new_identities.append((ident.kind, ident.value, cid))
        customer_of.append(cid)

    await repository.insert_customers(conn, new_customers)
    await repository.insert_identities(conn, new_identities)
    return Resolution(customer_of=customer_of, customers=customers)


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        import orjson

        loaded: dict[str, Any] = orjson.loads(value)
        return loaded
    return dict(value or {})
