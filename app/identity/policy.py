"""Merge protection: which of an event's identifiers may stitch, and which customers merge.

Pure: the database service feeds :func:`plan_event` what it loaded (under lock) and applies
the :class:`Plan`. :class:`ReferenceGraph` and :func:`resolve_sequential` apply the same plans
to an in-memory graph; they are the specification the database pipeline must match.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, TypeVar

from app.touchpoint import Identifier

K = TypeVar("K", bound=Hashable)

DEFAULT_LIMITS: Mapping[str, int] = MappingProxyType(
    {"user_id": 1, "crm_id": 1, "email": 5, "phone": 5}
)
"""Max distinct values per customer for each kind; kinds not listed are unlimited."""

DEFAULT_PRIORITY: tuple[str, ...] = ("user_id", "crm_id", "email", "phone")
"""Most important first; see :meth:`MergePolicy.rank` for the kinds not listed."""

_KIND = re.compile("[a-z0-9_]{1,64}")
# Ranks of unlisted kinds: the UTF-8 bytes of the kind, zero-padded to a fixed width, read as
# one big-endian integer. That keeps `rank` an int (callers compare plain ints) while
# ordering custom kinds alphabetically; kinds are at most 64 ASCII characters, so the
# encoding is exact for every kind `normalise_kind` produces.
_KIND_BYTES = 64
_ANONYMOUS_ID_OFFSET: int = 1 + 256**_KIND_BYTES


@dataclass(frozen=True)
class MergePolicy:
    """Per-kind limits and priorities for stitching.

    Construction validates: limits are ``>= 1`` (a limit of 0 would make the kind useless
    rather than protected) and priorities hold no duplicates; ``ValueError`` otherwise.
    """

    limits: Mapping[str, int] = field(default_factory=lambda: DEFAULT_LIMITS)
    priority: tuple[str, ...] = DEFAULT_PRIORITY
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for kind, limit in self.limits.items():
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"limit for {kind!r} must be a whole number >= 1, not {limit!r}")
        if len(set(self.priority)) != len(self.priority):
            raise ValueError(f"priority lists a kind twice: {','.join(self.priority)}")
        # Copy so a caller mutating its dict cannot change a policy in use.
        object.__setattr__(self, "limits", MappingProxyType(dict(self.limits)))
        object.__setattr__(self, "priority", tuple(self.priority))
        index = {kind: i for i, kind in enumerate(self.priority)}
        object.__setattr__(self, "_index", MappingProxyType(index))

    def __hash__(self) -> int:
        return hash((frozenset(self.limits.items()), self.priority))

    def limited_kinds(self) -> frozenset[str]:
        """The kinds with a limit: the only ones that can make :func:`plan_event` drop."""
        return frozenset(self.limits)

    def limit(self, kind: str) -> int | None:
        """Max distinct values of ``kind`` per customer; ``None`` means unlimited."""
        return self.limits.get(kind)

    def rank(self, kind: str) -> int:
        """Importance of ``kind``: lower is more important.

        Listed kinds rank by position; every unlisted kind ranks after them, custom kinds
        alphabetically, then ``anonymous_id`` last (unless it is listed). Only compare
        ranks with each other: unlisted ranks are very large integers.
        """
        listed = self._index.get(kind)
        if listed is not None:
            return listed
        base = len(self.priority)
        if kind == "anonymous_id":
            return base + _ANONYMOUS_ID_OFFSET
        encoded = kind.encode()[:_KIND_BYTES].ljust(_KIND_BYTES, b"\0")
        return base + int.from_bytes(encoded, "big")

    @classmethod
    def parse(cls, limits: str | None, priority: str | None) -> MergePolicy:
        """A policy from settings strings: ``"user_id=1,crm_id=1,email=5"`` and
        ``"user_id,crm_id,email,phone"``.

        ``None`` or a blank string means the default. Kinds must be spelled canonically
        (``[a-z0-9_]``); whitespace around items is ignored. Raises ``ValueError`` naming
        the offending part.
        """
        parsed_limits = DEFAULT_LIMITS
        if limits is not None and limits.strip():
            parsed_limits = _parse_limits(limits)
        parsed_priority = DEFAULT_PRIORITY
        if priority is not None and priority.strip():
            parsed_priority = _parse_priority(priority)
        return cls(limits=parsed_limits, priority=parsed_priority)


DEFAULT_POLICY = MergePolicy()


@dataclass(slots=True)  # not frozen: one per event, and frozen costs 3x to construct
class Plan(Generic[K]):
    """What to do with one event's identifiers.

    ``kept`` and ``dropped`` partition the event's (de-duplicated) identifiers, both in
    event order. ``customers`` are the distinct owners of ``kept``, in first-seen order;
    the caller merges them into one (the oldest), or creates a customer when it is empty,
    then attaches every kept identifier to it. Dropped identifiers are left where they are:
    owned ones stay with their owner, new ones are not recorded.
    """

    kept: list[Identifier]
    dropped: list[Identifier]
    customers: list[K]


def violates_limits(kind_values: Mapping[str, AbstractSet[str]], policy: MergePolicy) -> list[str]:
    """Kinds holding more distinct values than the policy allows, most important first."""
    over = [
        kind
        for kind, values in kind_values.items()
        if (limit := policy.limit(kind)) is not None and len(values) > limit
    ]
    return sorted(over, key=policy.rank)


def plan_event(
    identifiers: Sequence[Identifier],
    owners: Mapping[Identifier, K],
    existing: Mapping[K, Mapping[str, AbstractSet[str]]],
    policy: MergePolicy,
) -> Plan[K]:
    """Decide which identifiers an event keeps and which customers they fuse.

    Inputs: ``owners`` maps each already-known identifier of the event to its customer
    (resolved to survivors); ``existing[c]`` is customer ``c``'s identities by kind.

    Keeping everything would make one customer of the owners plus the event's identifiers.
    While that union breaks a limit, drop one identifier and plan again: among the kept
    identifiers that *contribute* to a broken kind (they are of that kind, or they point at
    a customer holding values of it), the one of lowest priority (``policy.rank``; ties: the
    later in the event). Dropping an owned identifier takes its customer out of the merge
    unless another kept identifier points at it.

    Guarantees, given consistent inputs (every owned identifier is listed in its owner's
    identities):

    * the union of ``customers``' identities and ``kept`` respects every limit, except for
      a kind where one of those customers already held more values than the limit before
      this event (say, after limits were tightened): such a customer keeps working, and the
      merge may not add values of that kind beyond the largest count already there;
    * the event's most important identifier (lowest rank, then earliest) is always kept, so
      a non-empty event never ends with nothing kept;
    * identifiers that do not contribute to a broken limit are never dropped;
    * shared device: an anonymous_id owned by customer X (user u1) arriving with user u2
      is dropped, and X is neither merged nor changed;
    * deterministic: same inputs, same plan; at most ``len(identifiers)`` rounds.
    """
    event = list(dict.fromkeys(identifiers))
    if not event:
        return Plan(kept=[], dropped=[], customers=[])
    position = {ident: i for i, ident in enumerate(event)}
    protected = min(event, key=lambda i: (policy.rank(i.kind), position[i]))
    kept = list(event)
    dropped: set[Identifier] = set()
    while True:
        customers = list(dict.fromkeys(owners[i] for i in kept if i in owners))
        broken = _broken_kinds(kept, customers, existing, policy)
        if not broken:
            break
        candidates = [
            i for i in kept if i != protected and _contributes(i, broken, owners, existing)
        ]
        if not candidates:
            # Only reachable when the inputs disagree (e.g. the protected identifier is
            # owned by c but missing from existing[c]); keeping beats dropping everything.
            break
        victim = max(candidates, key=lambda i: (policy.rank(i.kind), position[i]))
        kept.remove(victim)
        dropped.add(victim)
    return Plan(kept=kept, dropped=[i for i in event if i in dropped], customers=customers)


def _broken_kinds(
    kept: Iterable[Identifier],
    customers: Sequence[K],
    existing: Mapping[K, Mapping[str, AbstractSet[str]]],
    policy: MergePolicy,
) -> set[str]:
    union: dict[str, set[str]] = {}
    allowed: dict[str, int] = {}
    for c in customers:
        for kind, values in existing.get(c, {}).items():
            union.setdefault(kind, set()).update(values)
            # A customer already over a limit is grandfathered: the event is not to blame.
            allowed[kind] = max(allowed.get(kind, 0), len(values))
    for ident in kept:
        union.setdefault(ident.kind, set()).add(ident.value)
    broken = set()
    for kind, values in union.items():
        limit = policy.limit(kind)
        if limit is not None and len(values) > max(limit, allowed.get(kind, 0)):
            broken.add(kind)
    return broken


def _contributes(
    ident: Identifier,
    broken: set[str],
    owners: Mapping[Identifier, K],
    existing: Mapping[K, Mapping[str, AbstractSet[str]]],
) -> bool:
    if ident.kind in broken:
        return True
    if ident not in owners:
        return False
    held = existing.get(owners[ident], {})
    return any(held.get(kind) for kind in broken)


class ReferenceGraph:
    """The reference identity graph: events applied one at a time, in memory.

    This is the specification of identity resolution. For each event: look up the owners of
    its identifiers, :func:`plan_event`, merge the plan's customers into the smallest id
    (ids grow with creation, so the smallest is the oldest) or create a customer (next
    integer, from 1) when the plan names none, then attach the kept identifiers to it. An
    event without identifiers gets a fresh customer of its own. Merged ids resolve to their
    survivor forever.
    """

    def __init__(self, policy: MergePolicy = DEFAULT_POLICY) -> None:
        self.policy = policy
        self._owners: dict[Identifier, int] = {}
        self._identities: dict[int, dict[str, set[str]]] = {}
        self._merged_into: dict[int, int] = {}
        self._next_id = 1

    def process(self, identifiers: Sequence[Identifier]) -> int:
        """Apply one event; returns the customer it belongs to right now."""
        event = list(dict.fromkeys(identifiers))
        # Owners always point at survivors: merges re-point every moved identifier.
        owners = {i: self._owners[i] for i in event if i in self._owners}
        existing = {c: self._identities[c] for c in owners.values()}
        plan = plan_event(event, owners, existing, self.policy)
        if plan.customers:
            target = min(plan.customers)
        else:
            target = self._next_id
            self._next_id += 1
            self._identities[target] = {}
        for loser in plan.customers:
            if loser != target:
                self._merge(loser, target)
        for ident in plan.kept:
            self._owners[ident] = target
            self._identities[target].setdefault(ident.kind, set()).add(ident.value)
        return target

    def resolve(self, customer: int) -> int:
        """The surviving customer for any id this graph ever handed out."""
        while customer in self._merged_into:
            customer = self._merged_into[customer]
        return customer

    def owner(self, identifier: Identifier) -> int | None:
        return self._owners.get(identifier)

    def customers(self) -> dict[int, dict[str, set[str]]]:
        """Surviving customers and their identities by kind (a copy)."""
        return {
            c: {kind: set(values) for kind, values in kinds.items()}
            for c, kinds in self._identities.items()
        }

    def _merge(self, loser: int, target: int) -> None:
        moved = self._identities.pop(loser)
        into = self._identities[target]
        for kind, values in moved.items():
            into.setdefault(kind, set()).update(values)
            for value in values:
                self._owners[Identifier(kind=kind, value=value)] = target
        self._merged_into[loser] = target


def resolve_sequential(
    events: Sequence[Sequence[Identifier]], policy: MergePolicy = DEFAULT_POLICY
) -> list[int]:
    """Each event's final customer after processing ``events`` in order (the oracle).

    Customer ids are the :class:`ReferenceGraph`'s (1, 2, … in creation order), resolved to
    survivors after the last event. With limits the outcome depends on event order, so
    compare against a pipeline fed the same order; compare partitions (which events share
    a customer), not the ids themselves.
    """
    graph = ReferenceGraph(policy)
    assigned = [graph.process(event) for event in events]
    return [graph.resolve(c) for c in assigned]


def _parse_limits(text: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for item in text.split(","):
        kind, eq, number = (part.strip() for part in item.partition("="))
        if not eq:
            raise ValueError(f"invalid merge limits {text!r}: {item.strip()!r} is not kind=number")
        _check_kind(kind, what="merge limits", text=text)
        if kind in limits:
            raise ValueError(f"invalid merge limits {text!r}: {kind!r} appears twice")
        if not number.isascii() or not number.isdigit() or int(number) < 1:
            raise ValueError(
                f"invalid merge limits {text!r}: limit for {kind!r} must be a whole number"
                f" >= 1, not {number!r}"
            )
        limits[kind] = int(number)
    return limits


def _parse_priority(text: str) -> tuple[str, ...]:
    kinds = [item.strip() for item in text.split(",")]
    for kind in kinds:
        _check_kind(kind, what="merge priority", text=text)
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"invalid merge priority {text!r}: a kind appears twice")
    return tuple(kinds)


def _check_kind(kind: str, *, what: str, text: str) -> None:
    if not _KIND.fullmatch(kind):
        raise ValueError(
            f"invalid {what} {text!r}: {kind!r} is not an identifier kind"
            " (lower-case letters, digits and _)"
        )
