"""Rule matching: the per-event hot path of stage assignment.

A `Rule` is built once, when a journey model loads, and never changes. Everything that can
be prepared ahead is prepared in `__post_init__`: event globs become one compiled regular
expression, count conditions become an inclusive integer range, and property predicates
become closures. Matching an event then costs a few set look-ups, at most one regex match
and one closure call per predicate, and allocates nothing.

Matching semantics (the journey model file documents the same rules for authors):

- ``event`` globs use `fnmatch` syntax (``*``, ``?``, ``[seq]``) and ignore case. An event
  without a name (an identify call, an unnamed page) never matches a rule that names events.
- ``type`` and ``channel`` are exact, lower-case values from the canonical touchpoint.
- ``where`` predicates all have to hold. A property path is dotted (``order.total`` looks up
  ``properties["order"]["total"]``). A property that is absent *or null* counts as missing:
  ``exists`` fails, ``not_exists`` holds, ``ne`` and ``not_in`` hold, every other op fails.
- Numbers in a rule compare numerically with numbers and numeric strings (``"19.99"``),
  because sources are sloppy about JSON types; ``true``/``false`` only equal booleans; strings
  compare exactly (case matters).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from app.touchpoint import Channel, EventType

CHANNELS: Final[frozenset[str]] = frozenset(c.value for c in Channel)
EVENT_TYPES: Final[frozenset[str]] = frozenset(get_args(EventType))

Op = Literal["eq", "ne", "in", "not_in", "exists", "not_exists", "gt", "gte", "lt", "lte"]
OPS: Final[tuple[str, ...]] = get_args(Op)
NUMERIC_OPS: Final[frozenset[str]] = frozenset({"gt", "gte", "lt", "lte"})
LIST_OPS: Final[frozenset[str]] = frozenset({"in", "not_in"})
VALUELESS_OPS: Final[frozenset[str]] = frozenset({"exists", "not_exists"})
COUNT_KEYS: Final[tuple[str, ...]] = ("eq", "gte", "gt", "lte", "lt")

Scalar = str | int | float | bool

# Sentinel for "the property path does not resolve"; never equal to anything a source sends.
_MISSING: Final = object()


# Not frozen, as StepResult (app.journey.model): built per event stepped, and a frozen
# dataclass costs three times as much to construct. Rules only read it.
@dataclass(slots=True)
class EventFacts:
    """What the engine sees of one event. Built by the caller from a canonical touchpoint
    (live) or its stored timeline row (a replay), with the same values either way: the
    flags are the event's stored ``flags``."""

    type: str
    event: str | None
    channel: str
    properties: Mapping[str, Any]
    flags: Sequence[str]


def compile_globs(globs: Sequence[str]) -> re.Pattern[str]:
    """One case-insensitive regex that matches a name iff any of the `fnmatch` globs does."""
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs), re.IGNORECASE)


def _lookup(properties: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = properties
    for key in path:
        if not isinstance(node, Mapping):
            return _MISSING
        node = node.get(key, _MISSING)
        if node is _MISSING:
            return _MISSING
    # JSON null means "not sent" for every source we have seen; treat it as absent.
    return _MISSING if node is None else node


def as_number(value: Any) -> float | None:
    """`value` as a float if it is a number or a numeric string; None otherwise (and for bools)."""
    if type(value) is bool:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return None if math.isnan(number) else number
    return None


def _equals(expected: Scalar, actual: Any) -> bool:
    if type(expected) is bool:
        return actual is expected
    if isinstance(expected, int | float):
        number = as_number(actual)
        return number is not None and number == expected
    return isinstance(actual, str) and actual == expected


def _make_check(op: str, value: Any) -> Callable[[Any], bool]:
    """The test applied to a resolved property value (`_MISSING` when absent)."""
    if op == "exists":
        return lambda actual: actual is not _MISSING
    if op == "not_exists":
        return lambda actual: actual is _MISSING
    if op == "eq":
        return lambda actual: actual is not _MISSING and _equals(value, actual)
    if op == "ne":
        return lambda actual: actual is _MISSING or not _equals(value, actual)
    if op in LIST_OPS:
        options: tuple[Scalar, ...] = tuple(value)
        if op == "in":
            return lambda actual: (
                actual is not _MISSING and any(_equals(o, actual) for o in options)
            )
        return lambda actual: actual is _MISSING or not any(_equals(o, actual) for o in options)
    bound = float(value)
    compare: Callable[[float], bool] = {
        "gt": lambda n: n > bound,
        "gte": lambda n: n >= bound,
        "lt": lambda n: n < bound,
        "lte": lambda n: n <= bound,
    }[op]

    def numeric(actual: Any) -> bool:
        number = as_number(actual)
        return number is not None and compare(number)

    return numeric


@dataclass(frozen=True, slots=True)
class Predicate:
    """One ``where`` condition on the event's properties. Validated by the loader."""

    property: str
    op: Op
    value: Any = None
    _path: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _check: Callable[[Any], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_path", tuple(self.property.split(".")))
        object.__setattr__(self, "_check", _make_check(self.op, self.value))

    def holds(self, properties: Mapping[str, Any]) -> bool:
        return self._check(_lookup(properties, self._path))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"property": self.property, "op": self.op}
        if self.op not in VALUELESS_OPS:
            out["value"] = list(self.value) if self.op in LIST_OPS else self.value
        return out


@dataclass(frozen=True, slots=True)
class CountCondition:
    """A condition on a rule's per-customer counter; all given bounds have to hold.

    Reduced at construction to an inclusive range ``low..high`` (``high`` None: unbounded).
    """

    eq: int | None = None
    gte: int | None = None
    gt: int | None = None
    lte: int | None = None
    lt: int | None = None
    low: int = field(init=False, compare=False)
    high: int | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # A counter is at least 1 when it is checked: the current event has just been counted.
        lows = [1]
        highs: list[int] = []
        if self.eq is not None:
            lows.append(self.eq)
            highs.append(self.eq)
        if self.gte is not None:
            lows.append(self.gte)
        if self.gt is not None:
            lows.append(self.gt + 1)
        if self.lte is not None:
            highs.append(self.lte)
        if self.lt is not None:
            highs.append(self.lt - 1)
        object.__setattr__(self, "low", max(lows))
        object.__setattr__(self, "high", min(highs) if highs else None)

    @property
    def satisfiable(self) -> bool:
        return self.high is None or self.low <= self.high

    def holds(self, count: int) -> bool:
        return count >= self.low and (self.high is None or count <= self.high)

    def to_json(self) -> dict[str, int]:
        return {k: v for k in COUNT_KEYS if (v := getattr(self, k)) is not None}


@dataclass(frozen=True, slots=True)
class Rule:
    """One stage rule. ``None`` for `events`, `types` or `channels` means "any".

    The *base matchers* are type, event, channel and where; `count` is checked separately,
    against the counter of events that passed the base matchers (see `JourneyModel.step`).
    """

    id: str
    stage: str
    events: tuple[str, ...] | None = None
    types: frozenset[str] | None = None
    channels: frozenset[str] | None = None
    where: tuple[Predicate, ...] = ()
    count: CountCondition | None = None
    description: str | None = field(default=None, compare=False)  # for people; no effect
    # Where the rule starts in its model file; for error messages only, not part of content.
    line: int | None = field(default=None, compare=False)
    _event_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern = compile_globs(self.events) if self.events is not None else None
        object.__setattr__(self, "_event_re", pattern)

    def matches_event(self, name: str | None) -> bool:
        """Whether the event-name globs accept `name` (always, when the rule names no events)."""
        if self._event_re is None:
            return True
        return name is not None and self._event_re.match(name) is not None

    def matches_rest(self, facts: EventFacts) -> bool:
        """The base matchers other than the event name (which the model pre-filters by name)."""
        if self.types is not None and facts.type not in self.types:
            return False
        if self.channels is not None and facts.channel not in self.channels:
            return False
        # A loop, not all(<genexpr>): this runs per rule per event and must not allocate.
        for predicate in self.where:  # noqa: SIM110
            if not predicate.holds(facts.properties):
                return False
        return True

    def matches(self, facts: EventFacts) -> bool:
        """All base matchers: type, event, channel and where (not the count condition)."""
        return self.matches_event(facts.event) and self.matches_rest(facts)

    def to_json(self) -> dict[str, Any]:
        """Canonical JSON form; the model fingerprint hashes it without the description."""
        return {
            "id": self.id,
            "stage": self.stage,
            "event": list(self.events) if self.events is not None else None,
            "type": sorted(self.types) if self.types is not None else None,
            "channel": sorted(self.channels) if self.channels is not None else None,
            "where": [p.to_json() for p in self.where],
            "count": self.count.to_json() if self.count is not None else None,
            "description": self.description,
        }
