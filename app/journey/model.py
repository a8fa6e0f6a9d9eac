"""Journey models: ordered stages plus rules, and the per-customer stage state machine.

A `JourneyModel` is loaded once (`load_model`) and is immutable afterwards; it is safe to
share between tasks and threads. All per-customer state lives in `JourneyState`, which the
caller persists (``to_json``) and hands back for the customer's next event. The file format
is documented in `app.journey.loader`.

Guarantees of `JourneyModel.step`:

- Deterministic: the result depends only on the model, the state and the event.
- Stepping events one by one, persisting and restoring the state in between, gives exactly
  what `replay` gives for the same events (the state is the whole memory of the engine).
- ``current_stage`` is the stage of the latest stage-bearing event (it may go down: people
  go back); ``furthest_stage`` is the highest-ranked stage ever assigned and never goes down.
- An event flagged ``machine_activity`` (an email open by a privacy proxy, a click by a
  link scanner: `app.email.machine`) is not the person's doing: it leaves the state as it
  was (no stage, no counter, no first touch).
- The caller must step a customer's events in ``occurred_at`` order. A late event needs a
  `replay` of that customer's events; this module does no I/O and cannot do that itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from app.journey.errors import JourneyModelError
from app.journey.loader import FIRST_TOUCH_RULE_ID, PRESETS, read_model
from app.journey.rules import EventFacts, Rule
from app.touchpoint import MACHINE_FLAG

__all__ = [
    "FIRST_TOUCH_RULE_ID",
    "PRESETS",
    "EventFacts",
    "JourneyModel",
    "JourneyModelError",
    "JourneyState",
    "Rule",
    "StepResult",
    "load_model",
]

# Bump when the meaning of an unchanged model file changes (matching semantics, counters),
# so stored fingerprints stop matching and stages get recomputed.
# 2: events flagged machine_activity are no longer stage-bearing.
ENGINE_VERSION: Final = 2

# Distinct event names remembered per model. Names are client-controlled, so the cache is
# bounded; real sources send a few hundred distinct names at most.
_CANDIDATE_CACHE_SIZE: Final = 4096


@dataclass(slots=True)
class JourneyState:
    """One customer's journey state. Mutated by `JourneyModel.step`; JSON round-trips exactly."""

    counters: dict[str, int] = field(default_factory=dict)  # rule id -> events matched
    # Events stepped so far, machine activity aside; 0 means the next event is the first touch.
    seen_events: int = 0
    current_stage: str | None = None
    furthest_stage: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "seen_events": self.seen_events,
            "current_stage": self.current_stage,
            "furthest_stage": self.furthest_stage,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> JourneyState:
        """Rebuild a state from `to_json` output; None or {} is a fresh customer.

        Unknown keys are ignored (forward compatibility); wrongly typed values raise
        ValueError rather than silently corrupting a customer's journey.
        """
        if not data:
            return cls()
        counters = data.get("counters") or {}
        seen = data.get("seen_events", 0)
        current = data.get("current_stage")
        furthest = data.get("furthest_stage")
        if not isinstance(counters, Mapping) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in counters.items()
        ):
            raise ValueError(f"journey state: counters must map rule ids to counts: {counters!r}")
        if type(seen) is not int or seen < 0:
            raise ValueError(f"journey state: seen_events must be an int >= 0: {seen!r}")
        for stage in (current, furthest):
            if stage is not None and not isinstance(stage, str):
                raise ValueError(f"journey state: a stage must be a string or null: {stage!r}")
        return cls(dict(counters), seen, current, furthest)


# Not frozen: one is made per event stepped (the pipeline's and every replay's), and a
# frozen dataclass takes three times as long to construct (each field goes through
# object.__setattr__). Nothing keeps or changes one after `JourneyModel.step` returns it.
@dataclass(slots=True)
class StepResult:
    """What one event did to a customer's journey."""

    stage: str | None  # stage this event assigned; None: the event is not stage-bearing
    rule_id: str | None  # the winning rule's id, "first_touch", or None
    changed: bool  # current_stage changed because of this event
    previous_stage: str | None  # current_stage before this event


@dataclass(frozen=True, slots=True, eq=False)
class JourneyModel:
    """An immutable journey model. Build it with `load_model`; compare models by `fingerprint`."""

    name: str
    stages: tuple[str, ...]
    rules: tuple[Rule, ...]
    first_touch: str | None
    source: str  # the file path, or "preset:<name>"
    description: str | None = None
    _rank: dict[str, int] = field(init=False, repr=False)
    _fingerprint: str = field(init=False, repr=False)
    # Event name -> rules whose event globs accept it, in file order. Filled lazily; the
    # only mutable part, and invisible: it caches a pure function of the immutable rules.
    _by_event: dict[str | None, tuple[Rule, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rank = {stage: i for i, stage in enumerate(self.stages)}
        if not self.stages or len(rank) != len(self.stages):
            raise ValueError("stages must be non-empty and unique")
        used = [r.stage for r in self.rules]
        if self.first_touch is not None:
            used.append(self.first_touch)
        unknown = sorted({stage for stage in used if stage not in rank})
        if unknown:
            raise ValueError(f"unknown stages: {unknown}")
        content = self._content()
        for rule in content["rules"]:
            del rule["description"]  # prose for people; must not force a recompute
        digest_input = json.dumps(
            {"engine": ENGINE_VERSION, **content},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        object.__setattr__(self, "_rank", rank)
        object.__setattr__(self, "_fingerprint", hashlib.sha256(digest_input.encode()).hexdigest())
        object.__setattr__(self, "_by_event", {})

    def rank(self, stage: str) -> int:
        """0-based position of `stage`; ValueError for a stage this model does not have."""
        try:
            return self._rank[stage]
        except KeyError:
            raise ValueError(
                f"unknown stage {stage!r} in journey model {self.name!r} "
                f"(stages: {', '.join(self.stages)})"
            ) from None

    def step(self, state: JourneyState, facts: EventFacts) -> StepResult:
        """Apply the customer's next event (in ``occurred_at`` order) to `state`, in place.

        Every rule whose base matchers accept the event has its counter incremented; the
        first rule (in file order) that matches and whose count condition holds wins. On a
        customer's first event `first_touch` applies unless the winner's stage ranks later.
        A stage stored in `state` that this model does not know (the model changed) ranks
        below every stage, so the next stage-bearing event replaces it. An event flagged
        ``machine_activity`` changes nothing: no rule counts it and it is no first touch.
        """
        if MACHINE_FLAG in facts.flags:
            return StepResult(None, None, False, state.current_stage)
        counters = state.counters
        winner: Rule | None = None
        for rule in self._candidates(facts.event):
            if rule.matches_rest(facts):
                count = counters.get(rule.id, 0) + 1
                counters[rule.id] = count
                if winner is None and (rule.count is None or rule.count.holds(count)):
                    winner = rule

        rank = self._rank
        stage: str | None = None
        rule_id: str | None = None
        if winner is not None:
            stage, rule_id = winner.stage, winner.id
        first_touch = self.first_touch
        if (
            state.seen_events == 0
            and first_touch is not None
            and (stage is None or rank[stage] < rank[first_touch])
        ):
            stage, rule_id = first_touch, FIRST_TOUCH_RULE_ID
        state.seen_events += 1

        previous = state.current_stage
        if stage is None:
            return StepResult(None, None, False, previous)
        state.current_stage = stage
        furthest = state.furthest_stage
        if furthest is None or rank[stage] > rank.get(furthest, -1):
            state.furthest_stage = stage
        return StepResult(stage, rule_id, stage != previous, previous)

    def replay(self, events: Iterable[EventFacts]) -> tuple[JourneyState, list[StepResult]]:
        """Step a customer's whole history (in ``occurred_at`` order) from a fresh state."""
        state = JourneyState()
        return state, [self.step(state, facts) for facts in events]

    def fingerprint(self) -> str:
        """SHA-256 (hex) of what decides stage assignment: stages, first_touch, rules, engine.

        Stable across processes and file formats (TOML or YAML of the same model agree);
        ``name``, ``description``, ``source``, comments and layout do not affect it.
        """
        return self._fingerprint

    def to_json(self) -> dict[str, Any]:
        """The model as served by ``GET /v1/journey/model``."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "fingerprint": self._fingerprint,
            **self._content(),
        }

    def _content(self) -> dict[str, Any]:
        return {
            "stages": list(self.stages),
            "first_touch": self.first_touch,
            "rules": [rule.to_json() for rule in self.rules],
        }

    def _candidates(self, event: str | None) -> tuple[Rule, ...]:
        try:
            return self._by_event[event]
        except KeyError:
            pass
        found = tuple(rule for rule in self.rules if rule.matches_event(event))
        if len(self._by_event) >= _CANDIDATE_CACHE_SIZE:
            self._by_event.clear()
        self._by_event[event] = found
        return found


def load_model(spec: str) -> JourneyModel:
    """Load a preset by name (see `PRESETS`) or a model file by path (.toml, .yaml, .yml).

    Raises `JourneyModelError` naming the file, the line (when known) and the problem.
    """
    parsed = read_model(spec)
    return JourneyModel(
        name=parsed.name,
        stages=parsed.stages,
        rules=parsed.rules,
        first_touch=parsed.first_touch,
        source=parsed.source,
        description=parsed.description,
    )
