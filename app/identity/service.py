"""Resolving a batch of touchpoints to customers: stitching, protected merges.

Guarantees (per batch, inside the caller's transaction):
* The only locks taken are the matched customers' rows, in ascending id order, so two
  consumers never deadlock on each other's customers. Batches that share no customer and
  no new identifier run fully in parallel.
* Optimistic everywhere else: reads made before the lock are validated after it (a matched
  customer merged away meanwhile), and an identifier created concurrently by another
  consumer shows up as a conflict on the identities' primary key. Either way
  :class:`StaleRead` is raised and the caller retries the batch, which then sees the other
  consumer's committed work.
* Events are resolved one by one in batch order with :func:`app.identity.policy.plan_event`,
  exactly as :class:`app.identity.policy.ReferenceGraph` does, so the identity graph equals
  processing the events sequentially in the order they were stored (``events.seq``).
* Merges go into the oldest customer; identities, timeline and profile move with them, the
  ``merges`` log records it, and the survivor is marked for a journey replay from the
  earliest event the merge brought it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import orjson
import uuid_utils
from asyncpg.pgproto.pgproto import UUID as DriverUUID

from app.identity import repository
from app.identity.policy import MergePolicy, plan_event
from app.touchpoint import EventKey, Identifier, Touchpoint


class StaleRead(Exception):
    """A customer read before locking changed before the lock was granted; retry."""


@dataclass(slots=True)
class Absorbed:
    """The profile of a customer merged away, to be folded into its survivor."""

    first_seen: datetime
    last_seen: datetime
    events: int
    channels: dict[str, int]
    traits: dict[str, Any]
    traits_at: datetime | None


@dataclass(slots=True)
class CustomerState:
    id: uuid.UUID
    # Existing customers sort by creation; the batch's new ones after them, in order.
    age: tuple[int, Any, Any]
    journey_state: dict[str, Any]
    # Values of the kinds merge protection limits (the only ones plan_event can object to).
    identities: dict[str, set[str]] = field(default_factory=dict)
    row: asyncpg.Record | None = None  # as locked; None for a customer new in this batch

    @property
    def is_new(self) -> bool:
        return self.row is None

    def profile(self) -> Absorbed | None:
        """The stored profile, to fold into a survivor (only needed when merged away)."""
        return None if self.row is None else _absorbed(self.row)


@dataclass(slots=True)
class Resolution:
    customer_of: list[uuid.UUID]
    customers: dict[uuid.UUID, CustomerState] = field(default_factory=dict)
    # Customers whose journey must be recomputed once the batch's events are written: merge
    # survivors, from the earliest event a merge brought them (their history before it
    # stands), or from their first event (None).
    replay: dict[uuid.UUID, EventKey | None] = field(default_factory=dict)
    # survivor -> profiles of the customers merged into it by this batch
    absorbed: dict[uuid.UUID, list[Absorbed]] = field(default_factory=dict)
    # loser -> final survivor
    merged: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    # Flags this resolution adds to events (``not_linked:<kind>``), by index in the batch:
    # its own, not the touchpoints', which a retry or the isolation of a refused message
    # resolves again, maybe otherwise.
    flags: dict[int, list[str]] = field(default_factory=dict)


Owners = dict[repository.IdentKey, uuid.UUID]


async def current_owners(
    conn: asyncpg.Connection[Any], touchpoints: Sequence[Touchpoint]
) -> Owners:
    """The customer each of the touchpoints' identifiers belongs to now (if any)."""
    return await _owners(conn, _unique_identifiers(touchpoints))


async def _owners(conn: asyncpg.Connection[Any], identifiers: Iterable[Identifier]) -> Owners:
    return await repository.owners(conn, [(i.kind, i.value) for i in identifiers])


def _unique_identifiers(touchpoints: Sequence[Touchpoint]) -> set[Identifier]:
    """The touchpoints' identifiers, each once: one person's ids ride on each of their
    events."""
    return {i for tp in touchpoints for i in tp.identifiers}


async def resolve(
    conn: asyncpg.Connection[Any],
    touchpoints: Sequence[Touchpoint],
    policy: MergePolicy,
    owners: Owners | None = None,
) -> Stitching:
    """Assign each touchpoint a customer, creating, stitching and merging as the policy
    allows: reads and locks, then resolves in memory (``Stitching.resolution``). Nothing is
    written until the caller has inserted the new customers (``Stitching.new``) and called
    :meth:`Stitching.write`, so a new customer can go in with its final profile.

    `owners`, from :func:`current_owners` over these touchpoints (or more), saves reading
    them again. Like a read made here, it is validated under the locks: an owner merged
    away, or an identifier recorded meanwhile, raises :class:`StaleRead`, and the retry
    must read afresh (pass None)."""
    batch = _unique_identifiers(touchpoints)
    if owners is None:
        owners = await _owners(conn, batch)
    owner: dict[Identifier, uuid.UUID] = {
        i: c for i in batch if (c := owners.get((i.kind, i.value))) is not None
    }
    rows = await repository.lock_customers(conn, owner.values())
    if len(rows) != len(set(owner.values())) or any(r["merged_into"] for r in rows):
        raise StaleRead("a matched customer was merged while the batch waited for its lock")
    customers = {r["id"]: _state(r) for r in rows}
    # Only kinds with a limit can make merge protection refuse something, so only those
    # are loaded: a customer with thousands of anonymous ids costs nothing here.
    limited = policy.limited_kinds()
    for r in await repository.identities_of(conn, list(customers), limited):
        customers[r["customer_id"]].identities.setdefault(r["kind"], set()).add(r["value"])

    stitching = Stitching(customers, owner, policy)
    stitching.conclude([stitching.process(tp, i) for i, tp in enumerate(touchpoints)])
    return stitching


def new_customer_id() -> uuid.UUID:
    """A time-ordered (v7) id for a customer a batch creates, of asyncpg's own UUID type (a
    ``uuid.UUID``, equal and equally hashed), as every id read from the database is: its
    hash, comparisons and bytes run in C, where the standard library's run Python code in
    every dict lookup, sort and COPY row of the batch (bench.handler: 3.8 % fewer
    instructions an event)."""
    return DriverUUID(uuid_utils.uuid7().bytes)


def independent_parts(
    touchpoints: Sequence[Touchpoint], owners: Owners, parts: int
) -> list[list[Touchpoint]]:
    """Split a batch into up to `parts` groups that, as the graph stands in `owners` (from
    :func:`current_owners`), share no customer, no identifier and no message, so that their
    transactions lock disjoint customers and run side by side. Each group keeps the batch's
    order.

    A hint, not a guarantee: should another consumer link two groups meanwhile, their
    transactions meet on a customer's row lock or an identity conflict, as any two
    consumers' batches do, and the result is still that of processing one by one.
    """
    # Customers as small ints: hashing a uuid.UUID runs Python code, once per lookup below.
    label: dict[uuid.UUID, int] = {}
    owner = {key: label.setdefault(c, len(label)) for key, c in owners.items()}
    # Connected components of events, linked by a message, an identifier or its owner.
    # Written for speed (it runs per event): each component keeps its nodes and events, and
    # joining two moves the smaller one's.
    component: dict[Any, int] = {}
    nodes: dict[int, list[Any]] = {}
    members: dict[int, list[int]] = {}
    for index, tp in enumerate(touchpoints):
        linked: list[Any] = [("message", tp.message_id)]
        for ident in tp.identifiers:
            key = (ident.kind, ident.value)
            linked.append(owner.get(key, key))
        found = {c for n in linked if (c := component.get(n)) is not None}
        if not found:
            into = index
            nodes[into], members[into] = [], []
        elif len(found) == 1:  # the common case: one person's next event
            (into,) = found
        else:
            into = max(found, key=lambda c: len(nodes[c]))
            for other in found:
                if other != into:
                    moved = nodes.pop(other)
                    for n in moved:
                        component[n] = into
                    nodes[into] += moved
                    members[into] += members.pop(other)
        for n in linked:
            if component.get(n) != into:
                component[n] = into
                nodes[into].append(n)
        members[into].append(index)
    # Largest components first, each into the emptiest group.
    load = [0] * parts
    group_at = [0] * len(touchpoints)
    for events in sorted(members.values(), key=len, reverse=True):
        g = load.index(min(load))
        load[g] += len(events)
        for index in events:
            group_at[index] = g
    groups: list[list[Touchpoint]] = [[] for _ in range(parts)]
    for tp, g in zip(touchpoints, group_at, strict=True):
        groups[g].append(tp)
    return [g for g in groups if g]


class Stitching:
    """The in-memory identity graph of one batch; mirrors ReferenceGraph step for step.
    :func:`resolve` runs it over the batch and concludes it; :meth:`write` records it."""

    def __init__(
        self,
        customers: dict[uuid.UUID, CustomerState],
        owner: dict[Identifier, uuid.UUID],
        policy: MergePolicy,
    ) -> None:
        self.customers = customers
        self.owner = owner  # as loaded or attached; follow `merged_into` for the survivor
        self.merged_into: dict[uuid.UUID, uuid.UUID] = {}
        self.policy = policy
        self.limited = policy.limited_kinds()
        self.unrecorded: set[Identifier] = set()  # identifiers the database does not have yet
        # Customers the batch created, in order, each with its first event's time. Inserted
        # by the caller before write(): the pipeline gives each its final profile.
        self.new: list[tuple[uuid.UUID, datetime]] = []
        self.resolution = Resolution(customer_of=[], customers=customers)
        self.merges: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID, orjson.Fragment]] = []

    def survivor(self, customer: uuid.UUID) -> uuid.UUID:
        while customer in self.merged_into:
            customer = self.merged_into[customer]
        return customer

    def process(self, tp: Touchpoint, index: int) -> uuid.UUID:
        """The customer of `tp`, the batch's event at `index`."""
        event = list(dict.fromkeys(tp.identifiers))
        owners = {i: self.survivor(self.owner[i]) for i in event if i in self.owner}
        if len(owners) == len(event) and len(set(owners.values())) == 1:
            # Every identifier is already this one customer's: nothing to plan or attach
            # (plan_event would keep them all and name just this customer).
            return owners[event[0]]
        existing = {c: self.customers[c].identities for c in owners.values()}
        plan = plan_event(event, owners, existing, self.policy)
        if plan.customers:
            target = min(plan.customers, key=lambda c: self.customers[c].age)
        else:
            target = new_customer_id()
            self.customers[target] = CustomerState(target, (1, len(self.new), target), {})
            self.new.append((target, tp.occurred_at))
        for loser in plan.customers:
            if loser != target:
                self._merge(loser, target, tp)
        into = self.customers[target].identities
        for ident in plan.kept:
            if ident not in self.owner:
                self.unrecorded.add(ident)
            self.owner[ident] = target
            if ident.kind in self.limited:
                into.setdefault(ident.kind, set()).add(ident.value)
        # The event says which identifiers merge protection kept from stitching, once a
        # kind (the touchpoint is left as it came: see Resolution.flags).
        if plan.dropped:
            kinds = dict.fromkeys(f"not_linked:{ident.kind}" for ident in plan.dropped)
            if flags := [flag for flag in kinds if flag not in tp.flags]:
                self.resolution.flags[index] = flags
        return target

    def _merge(self, loser: uuid.UUID, target: uuid.UUID, tp: Touchpoint) -> None:
        into = self.customers[target].identities
        for kind, values in self.customers[loser].identities.items():
            into.setdefault(kind, set()).update(values)
        self.customers[loser].identities = {}
        self.merged_into[loser] = target
        linking = orjson.Fragment(msgspec.json.encode(tp.identifiers))
        self.merges.append((loser, target, tp.event_id, linking))

    def conclude(self, customer_of: list[uuid.UUID]) -> None:
        """The batch's :class:`Resolution`, once every event is processed (all but
        ``replay``, which :meth:`write` adds)."""
        survivor = {loser: self.survivor(loser) for loser in self.merged_into}
        resolution = self.resolution
        resolution.customer_of = [self.survivor(c) for c in customer_of]
        resolution.merged = survivor
        for loser, target in survivor.items():
            profile = self.customers[loser].profile()
            if profile is not None:
                resolution.absorbed.setdefault(target, []).append(profile)

    async def write(self, conn: asyncpg.Connection[Any]) -> None:
        """Record the merges and the new identities (the new customers are in already), and
        mark merge survivors for a journey replay (``resolution.replay``)."""
        resolution, survivor = self.resolution, self.resolution.merged
        gained = await repository.earliest_events(conn, list(survivor))  # before they move
        final = [(loser, survivor[loser], event_id, ids) for loser, _, event_id, ids in self.merges]
        await repository.merge_customers(conn, final)
        for loser, target in survivor.items():
            if loser in gained:
                since = resolution.replay.get(target)
                resolution.replay[target] = min(since, gained[loser]) if since else gained[loser]
        new_identities = sorted(
            (i.kind, i.value, self.survivor(self.owner[i])) for i in self.unrecorded
        )
        try:
            await repository.insert_identities(conn, new_identities)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "pk_identities":
                raise
            # Not chained: a conflict that outlasts the retries is not a refused message.
            raise StaleRead("another consumer recorded one of these identifiers first") from None


def _state(row: asyncpg.Record) -> CustomerState:
    return CustomerState(
        id=row["id"],
        age=(0, row["created_at"], row["id"]),
        journey_state=_json(row["journey_state"]),
        row=row,
    )


def _absorbed(row: asyncpg.Record) -> Absorbed:
    return Absorbed(
        first_seen=row["first_seen_at"],
        last_seen=row["last_seen_at"],
        events=row["event_count"],
        channels=_json(row["channel_counts"]),
        traits=_json(row["traits"]),
        traits_at=row["traits_at"],
    )


def _json(value: Any) -> dict[str, Any]:
    # asyncpg hands jsonb over as text unless a codec is set.
    loaded = orjson.loads(value) if isinstance(value, str) else value
    return dict(loaded or {})
