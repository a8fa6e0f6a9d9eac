"""Reading and validating journey model files.

A journey model is a TOML file (YAML works the same way when PyYAML is installed)::

    name = "default"                      # optional; defaults to the file name
    description = "..."                   # optional, free text
    stages = ["awareness", "interest", "consideration", "purchase"]   # ordered, unique
    first_touch = "awareness"             # optional, see below

    [[rules]]                             # evaluated in file order; the first match wins
    id = "repeat-purchase"                # optional; default "rule-<n>" (1-based position)
    description = "..."                   # optional, free text; does not affect matching
    stage = "purchase"                    # required: one of `stages`
    event = "Order Completed"             # optional: fnmatch glob(s), case-insensitive
    type = ["track"]                      # optional: track, page, screen, identify, alias, group
    channel = ["web", "in_store"]         # optional: web, email, social, in_store, mobile,
                                          #   crm, call_center, ads, other
    count = { gte = 2 }                   # optional: eq, gte, gt, lte, lt (all must hold)

    [[rules.where]]                       # optional, repeatable: all predicates must hold
    property = "revenue"                  # dotted path into the event's properties
    op = "gt"                             # eq, ne, in, not_in, exists, not_exists,
    value = 0                             #   gt, gte, lt, lte (no value for exists/not_exists)

``event``, ``type`` and ``channel`` each take one string or a list (any of them may match).
A rule with no ``event``, ``type``, ``channel`` or ``where`` matches every event; that is
allowed, but it shadows every rule after it unless it has a ``count`` condition.

*Counters.* Each rule counts, per customer, the events (in ``occurred_at`` order, the current
one included) that passed its event/type/channel/where matchers, whether or not the rule
won. ``count`` is checked against that counter, so a rule ``event = "Order Completed"``,
``count = { gte = 2 }`` placed before the plain purchase rule sends every repeat order to
its stage.

*First touch.* A brand-new customer's first event gets ``first_touch`` unless the rule that
matched it names a later stage (then that stage).

*Machine activity.* An event flagged ``machine_activity`` (an email open by a privacy proxy, a
click by a link scanner) is not the person's doing, in every model: no rule matches or
counts it, and it is no first touch.

Loading fails with `JourneyModelError` (file, line, problem) on anything questionable:
syntax errors, unknown keys (typos), unknown stages, types, channels or ops, duplicate
stages or rule ids, malformed counts and predicate values (a number must be finite: no
``inf``, ``nan`` or integer beyond ±1.8e308), nesting deeper than the parser follows, and a
NUL character (``\u0000``) in any string, which PostgreSQL cannot store. Preset models live
next to this module in ``presets/`` and are read as package data.
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
import reprlib
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, NoReturn, cast

from app.journey.errors import JourneyModelError
from app.journey.rules import (
    CHANNELS,
    COUNT_KEYS,
    EVENT_TYPES,
    LIST_OPS,
    NUMERIC_OPS,
    OPS,
    VALUELESS_OPS,
    CountCondition,
    Op,
    Predicate,
    Rule,
)
from app.journey.sourcemap import SourceMap, toml_source_map, yaml_source_map

PRESETS: Final[tuple[str, ...]] = ("default", "omnichannel", "digital", "classic")
FIRST_TOUCH_RULE_ID: Final = "first_touch"

_TOP_KEYS: Final = ("name", "description", "stages", "first_touch", "rules")
_RULE_KEYS: Final = ("id", "description", "stage", "event", "type", "channel", "count", "where")
_WHERE_KEYS: Final = ("property", "op", "value")
_TOML_POSITION = re.compile(r"^(?P<problem>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")
_AT_END: Final = "(at end of document)"
# What the parsers' recursion gives up on: lists or tables hundreds of levels down.
_TOO_DEEP: Final = "nesting too deep (lists or tables within each other, hundreds of levels)"
_MAX_STAGE_LENGTH: Final = 64


@dataclass(frozen=True)
class ParsedModel:
    """A validated model file, ready to become a `JourneyModel`."""

    name: str
    description: str | None
    stages: tuple[str, ...]
    first_touch: str | None
    rules: tuple[Rule, ...]
    source: str


def read_model(spec: str) -> ParsedModel:
    """Load and validate a preset (by name) or a model file (by path).

    Raises `JourneyModelError` for a missing file, an unknown preset and every invalid model.
    """
    if spec in PRESETS:
        source = f"preset:{spec}"
        text = resources.files("app.journey.presets").joinpath(f"{spec}.toml").read_text("utf-8")
        return _parse_toml(text, file=source, default_name=spec, source=source)

    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        if not suffix and not path.exists():
            raise JourneyModelError(
                spec, None, f"unknown preset {spec!r} (presets: {', '.join(PRESETS)})"
            )
        raise JourneyModelError(spec, None, "a model file must end in .toml, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JourneyModelError(spec, None, "no such file") from None
    except UnicodeDecodeError:
        raise JourneyModelError(spec, None, "the file is not UTF-8 text") from None
    except OSError as exc:
        raise JourneyModelError(spec, None, f"cannot read the file: {exc.strerror}") from None
    if suffix == ".toml":
        return _parse_toml(text, file=spec, default_name=path.stem, source=spec)
    return _parse_yaml(text, file=spec, default_name=path.stem, source=spec)


def _parse_toml(text: str, *, file: str, default_name: str, source: str) -> ParsedModel:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line: int | None = None
        if match := _TOML_POSITION.match(message):
            line = int(match["line"])
            message = f"{match['problem']} (column {match['col']})"
        elif message.endswith(_AT_END):
            # e.g. an unclosed array: point at the last line, where the parser gave up.
            line = max(1, len(text.splitlines()))
            message = message.removesuffix(_AT_END).rstrip() + " (at the end of the file)"
        raise JourneyModelError(file, line, f"invalid TOML: {message}") from None
    except ValueError as exc:  # a value it cannot build (an integer of over 4,300 digits)
        raise JourneyModelError(file, None, f"invalid TOML: {exc}") from None
    except RecursionError:
        raise JourneyModelError(file, None, f"invalid TOML: {_TOO_DEEP}") from None
    return _Validator(file, toml_source_map(text)).model(data, default_name, source)


def _parse_yaml(text: str, *, file: str, default_name: str, source: str) -> ParsedModel:
    try:
        # Imported by name: PyYAML is optional and ships without type stubs.
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        raise JourneyModelError(
            file, None, "YAML models need PyYAML, which is not installed; write the model in TOML"
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = int(mark.line) + 1 if mark is not None else None
        raise JourneyModelError(file, line, f"invalid YAML: {problem}") from None
    except ValueError as exc:  # a value it cannot build (a date 2026-13-01, a huge integer)
        raise JourneyModelError(file, None, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise JourneyModelError(file, None, f"invalid YAML: {_TOO_DEEP}") from None
    return _Validator(file, yaml_source_map(root, yaml)).model(data, default_name, source)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and type(value) is not bool


def _is_finite(number: float) -> bool:
    """Whether `number` is a float that is neither infinite nor NaN, or an int that fits one."""
    try:
        return math.isfinite(number)
    except OverflowError:  # an int beyond ±1.8e308
        return False


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or _is_number(value)


class _Validator:
    """Turns parsed data into a `ParsedModel`, or raises at the first problem found."""

    def __init__(self, file: str, smap: SourceMap) -> None:
        self.file = file
        self.smap = smap

    def fail(
        self,
        problem: str,
        key: str | None = None,
        *,
        rule: int | None = None,
        where: int | None = None,
    ) -> NoReturn:
        raise JourneyModelError(self.file, self.smap.line(key, rule=rule, where=where), problem)

    def refuse_nul(
        self,
        value: Any,
        what: str,
        key: str | None = None,
        *,
        rule: int | None = None,
        where: int | None = None,
    ) -> None:
        # PostgreSQL's text and jsonb cannot hold U+0000: a model that names a stage or rule
        # with one would load, then every event it is written for would be dead-lettered.
        if isinstance(value, str) and "\x00" in value:
            self.fail(
                f"{what} contains a NUL character (\\u0000), which PostgreSQL cannot store",
                key,
                rule=rule,
                where=where,
            )

    def check_keys(
        self,
        table: dict[Any, Any],
        allowed: Sequence[str],
        prefix: str,
        rule: int | None = None,
        where: int | None = None,
    ) -> None:
        for key in table:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = (
                f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            )
            self.fail(f"{prefix}unknown key {key!r}{hint}", str(key), rule=rule, where=where)

    def model(self, data: Any, default_name: str, source: str) -> ParsedModel:
        if not isinstance(data, dict):
            self.fail("the model must be a table with 'stages' and 'rules'")
        self.check_keys(data, _TOP_KEYS, "")
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name.strip():
            self.fail("'name' must be a non-empty string", "name")
        self.refuse_nul(name, "'name'", "name")
        description = data.get("description")
        if description is not None and not isinstance(description, str):
            self.fail("'description' must be a string", "description")
        self.refuse_nul(description, "'description'", "description")
        stages = self.stages(data.get("stages"))

        first_touch = data.get("first_touch")
        self.refuse_nul(first_touch, "first_touch", "first_touch")
        if first_touch is not None and first_touch not in stages:
            self.fail(
                f"first_touch: unknown stage {first_touch!r} (stages: {', '.join(stages)})",
                "first_touch",
            )

        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list):
            self.fail("'rules' must be an array of tables ([[rules]])", "rules")
        rules = tuple(self.rule(i, raw, stages) for i, raw in enumerate(raw_rules))
        seen: dict[str, int] = {}
        for i, rule in enumerate(rules):
            if rule.id in seen:
                first = seen[rule.id]
                self.fail(
                    f"rule {rule.id!r}: duplicate rule id (also rule {first + 1}, "
                    f"line {self.smap.line(rule=first)})",
                    "id",
                    rule=i,
                )
            seen[rule.id] = i
        if not rules and first_touch is None:
            self.fail("the model assigns no stage: add [[rules]] or first_touch")
        return ParsedModel(name, description, stages, first_touch, rules, source)

    def stages(self, raw: Any) -> tuple[str, ...]:
        if raw is None:
            self.fail("'stages' is missing: list the journey's stages in order")
        if not isinstance(raw, list) or not raw:
            self.fail("'stages' must be a non-empty list of stage names", "stages")
        seen: set[str] = set()
        for stage in raw:
            if not isinstance(stage, str) or not stage.strip() or stage != stage.strip():
                self.fail(f"stage {stage!r}: a stage must be a non-empty, trimmed string", "stages")
            self.refuse_nul(stage, f"stage {stage!r}", "stages")
            if len(stage) > _MAX_STAGE_LENGTH:
                self.fail(f"stage {stage!r}: longer than {_MAX_STAGE_LENGTH} characters", "stages")
            # Stages differing only in case would be indistinguishable on dashboards.
            if stage.casefold() in seen:
                self.fail(f"duplicate stage {stage!r}", "stages")
            seen.add(stage.casefold())
        return tuple(raw)

    def rule(self, index: int, raw: Any, stages: tuple[str, ...]) -> Rule:
        if not isinstance(raw, dict):
            self.fail(f"rule {index + 1}: a rule must be a table", rule=index)
        rule_id = raw.get("id", f"rule-{index + 1}")
        if not isinstance(rule_id, str) or not rule_id.strip():
            self.fail(f"rule {index + 1}: 'id' must be a non-empty string", "id", rule=index)
        self.refuse_nul(rule_id, f"rule {index + 1}: 'id'", "id", rule=index)
        prefix = f"rule {rule_id!r}: "
        if rule_id == FIRST_TOUCH_RULE_ID:
            self.fail(f"{prefix}the id {FIRST_TOUCH_RULE_ID!r} is reserved", "id", rule=index)
        self.check_keys(raw, _RULE_KEYS, prefix, rule=index)
        if "description" in raw and not isinstance(raw["description"], str):
            self.fail(f"{prefix}'description' must be a string", "description", rule=index)
        self.refuse_nul(raw.get("description"), f"{prefix}'description'", "description", rule=index)

        stage = raw.get("stage")
        if stage is None:
            self.fail(f"{prefix}'stage' is missing", rule=index)
        if stage not in stages:
            self.fail(
                f"{prefix}unknown stage {stage!r} (stages: {', '.join(stages)})",
                "stage",
                rule=index,
            )
        events = self.strings(raw, "event", prefix, index)
        types = self.strings(raw, "type", prefix, index, allowed=EVENT_TYPES)
        channels = self.strings(raw, "channel", prefix, index, allowed=CHANNELS)
        count = self.count(raw.get("count"), prefix, index)
        where_raw = raw.get("where", [])
        if not isinstance(where_raw, list):
            self.fail(
                f"{prefix}'where' must be an array of tables ([[rules.where]])", "where", rule=index
            )
        where = tuple(self.predicate(raw_p, prefix, index, j) for j, raw_p in enumerate(where_raw))
        return Rule(
            id=rule_id,
            stage=stage,
            events=events,
            types=frozenset(types) if types is not None else None,
            channels=frozenset(channels) if channels is not None else None,
            where=where,
            count=count,
            description=raw.get("description"),
            line=self.smap.line(rule=index),
        )

    def strings(
        self,
        raw: dict[str, Any],
        key: str,
        prefix: str,
        index: int,
        allowed: Iterable[str] | None = None,
    ) -> tuple[str, ...] | None:
        value = raw.get(key)
        if value is None:
            return None
        values = [value] if isinstance(value, str) else value
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v for v in values)
        ):
            self.fail(
                f"{prefix}{key!r} must be a non-empty string or list of strings", key, rule=index
            )
        for v in values:
            self.refuse_nul(v, f"{prefix}{key!r}", key, rule=index)
        if allowed is not None:
            options = sorted(allowed)
            for v in values:
                if v not in options:
                    self.fail(
                        f"{prefix}unknown {key} {v!r} ({key}s: {', '.join(options)})",
                        key,
                        rule=index,
                    )
        return tuple(values)

    def count(self, raw: Any, prefix: str, index: int) -> CountCondition | None:
        if raw is None:
            return None
        example = "e.g. count = { gte = 2 }"
        if not isinstance(raw, dict) or not raw:
            self.fail(
                f"{prefix}'count' must be a table of {', '.join(COUNT_KEYS)} ({example})",
                "count",
                rule=index,
            )
        for key, value in raw.items():
            if key not in COUNT_KEYS:
                self.fail(
                    f"{prefix}count: unknown condition {key!r} "
                    f"(conditions: {', '.join(COUNT_KEYS)})",
                    "count",
                    rule=index,
                )
            if type(value) is not int or value < 0:
                self.fail(
                    f"{prefix}count.{key} must be a whole number >= 0, got {value!r}",
                    "count",
                    rule=index,
                )
        condition = CountCondition(**raw)
        if not condition.satisfiable:
            self.fail(
                f"{prefix}count {raw} can never hold (the counter is at least 1 when checked)",
                "count",
                rule=index,
            )
        return condition

    def predicate(self, raw: Any, prefix: str, index: int, j: int) -> Predicate:
        prefix = f"{prefix}where #{j + 1}: "
        if not isinstance(raw, dict):
            self.fail(
                f"{prefix}a predicate must be a table with property, op, value", rule=index, where=j
            )
        self.check_keys(raw, _WHERE_KEYS, prefix, rule=index, where=j)
        prop = raw.get("property")
        if not isinstance(prop, str) or not all(prop.split(".")):
            self.fail(
                f"{prefix}'property' must be a dotted path like \"order.total\"",
                "property",
                rule=index,
                where=j,
            )
        self.refuse_nul(prop, f"{prefix}'property'", "property", rule=index, where=j)
        op = raw.get("op")
        if op not in OPS:
            close = difflib.get_close_matches(str(op), OPS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.fail(
                f"{prefix}unknown op {op!r} ({hint}ops: {', '.join(OPS)})",
                "op",
                rule=index,
                where=j,
            )
        has_value = "value" in raw
        value: Any = raw.get("value")
        if op in VALUELESS_OPS:
            if has_value:
                self.fail(f"{prefix}op {op!r} takes no value", "value", rule=index, where=j)
        elif not has_value:
            self.fail(f"{prefix}op {op!r} needs a value", rule=index, where=j)
        elif op in NUMERIC_OPS and not _is_number(value):
            self.fail(
                f"{prefix}op {op!r} needs a number, got {value!r}", "value", rule=index, where=j
            )
        elif op in LIST_OPS and (
            not isinstance(value, list) or not value or not all(_is_scalar(v) for v in value)
        ):
            self.fail(
                f"{prefix}op {op!r} needs a non-empty list of strings, numbers or booleans, "
                f"got {value!r}",
                "value",
                rule=index,
                where=j,
            )
        elif op in ("eq", "ne") and not _is_scalar(value):
            self.fail(
                f"{prefix}op {op!r} needs a string, number or boolean, got {value!r}",
                "value",
                rule=index,
                where=j,
            )
        if op in LIST_OPS:
            value = tuple(value)
        for v in value if op in LIST_OPS else (value,):
            self.refuse_nul(v, f"{prefix}'value'", "value", rule=index, where=j)
            if _is_number(v) and not _is_finite(v):
                self.fail(
                    f"{prefix}'value' must be a finite number within ±1.8e308, "
                    f"got {reprlib.repr(v)}",
                    "value",
                    rule=index,
                    where=j,
                )
        return Predicate(prop, cast(Op, op), value)
