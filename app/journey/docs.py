"""A journey model rendered as Markdown, for people: ``percorso journey check`` prints it and
the README's tables of the presets are generated with it (a test keeps them in sync)."""

from __future__ import annotations

from typing import Any

from app.journey.model import JourneyModel
from app.journey.rules import CountCondition, Predicate, Rule

_COUNT_SYMBOLS = {"eq": "=", "gte": "≥", "gt": ">", "lte": "≤", "lt": "<"}
_OP_WORDS = {
    "eq": "=",
    "ne": "≠",
    "in": "in",
    "not_in": "not in",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _value(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _predicate(p: Predicate) -> str:
    if p.op == "exists":
        return f"`{p.property}` is set"
    if p.op == "not_exists":
        return f"`{p.property}` is not set"
    return f"`{p.property}` {_OP_WORDS[p.op]} {_value(p.value)}"


def _count(count: CountCondition) -> str:
    return " and ".join(f"count {_COUNT_SYMBOLS[k]} {v}" for k, v in count.to_json().items())


def _conditions(rule: Rule) -> str:
    parts: list[str] = []
    if rule.types is not None:
        parts.append("type " + ", ".join(f"`{t}`" for t in sorted(rule.types)))
    if rule.channels is not None:
        parts.append("channel " + ", ".join(f"`{c}`" for c in sorted(rule.channels)))
    parts.extend(_predicate(p) for p in rule.where)
    if rule.count is not None:
        parts.append(_count(rule.count))
    return "; ".join(parts) or "—"


def rules_table(model: JourneyModel) -> str:
    """The model's stages, first touch and rules (in evaluation order) as Markdown."""
    lines = [
        f"Stages: {' → '.join(model.stages)}. "
        + (
            f"A new customer's first event: **{model.first_touch}** unless a rule below "
            "places it later."
            if model.first_touch
            else "No first-touch stage."
        ),
        "",
        "| # | rule | stage | event names | also requires |",
        "|---|---|---|---|---|",
    ]
    for i, rule in enumerate(model.rules, start=1):
        events = ", ".join(rule.events) if rule.events is not None else "any"
        lines.append(
            f"| {i} | `{rule.id}` | {rule.stage} | {_cell(events)} | {_cell(_conditions(rule))} |"
        )
    return "\n".join(lines) + "\n"
