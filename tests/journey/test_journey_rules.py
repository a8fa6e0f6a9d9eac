"""Property predicates, one op at a time, as a model author writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.journey import EventFacts, load_model

PREDICATE_MODEL = """
stages = ["hit"]

[[rules]]
id = "p"
stage = "hit"
[[rules.where]]
property = "{prop}"
op = "{op}"
{value}
"""


def matches(tmp_path: Path, prop: str, op: str, value: str, properties: dict[str, Any]) -> bool:
    path = tmp_path / "journey.toml"
    path.write_text(PREDICATE_MODEL.format(prop=prop, op=op, value=value), encoding="utf-8")
    model = load_model(str(path))
    facts = EventFacts(
        type="track", event="Anything", channel="web", properties=properties, flags=[]
    )
    return model.replay([facts])[1][0].stage == "hit"


@pytest.mark.parametrize(
    ("op", "value", "properties", "expected"),
    [
        ("eq", '"EUR"', {"currency": "EUR"}, True),
        ("eq", '"EUR"', {"currency": "eur"}, False),  # strings compare exactly
        ("eq", '"EUR"', {}, False),
        ("eq", "10", {"currency": 10.0}, True),  # numbers compare numerically
        ("eq", "10", {"currency": "10"}, True),  # numeric strings too
        ("eq", "1", {"currency": True}, False),  # a bool is not a number
        ("eq", "true", {"currency": True}, True),
        ("eq", "true", {"currency": 1}, False),
        ("ne", '"EUR"', {"currency": "USD"}, True),
        ("ne", '"EUR"', {"currency": "EUR"}, False),
        ("ne", '"EUR"', {}, True),  # missing is "not equal"
        ("in", '["EUR", "USD"]', {"currency": "USD"}, True),
        ("in", '["EUR", "USD"]', {"currency": "GBP"}, False),
        ("in", '["EUR", "USD"]', {}, False),
        ("in", "[1, 2]", {"currency": 2}, True),
        ("not_in", '["EUR", "USD"]', {"currency": "GBP"}, True),
        ("not_in", '["EUR", "USD"]', {"currency": "EUR"}, False),
        ("not_in", '["EUR", "USD"]', {}, True),
        ("exists", "", {"currency": ""}, True),
        ("exists", "", {"currency": None}, False),  # null counts as absent
        ("exists", "", {}, False),
        ("not_exists", "", {}, True),
        ("not_exists", "", {"currency": None}, True),
        ("not_exists", "", {"currency": 0}, False),
        ("gt", "100", {"currency": 100.5}, True),
        ("gt", "100", {"currency": 100}, False),
        ("gt", "100", {"currency": "250"}, True),
        ("gt", "100", {"currency": "lots"}, False),
        ("gt", "100", {}, False),
        ("gte", "100", {"currency": 100}, True),
        ("gte", "100", {"currency": 99.99}, False),
        ("lt", "0.5", {"currency": 0.25}, True),
        ("lt", "0.5", {"currency": 0.5}, False),
        ("lte", "0.5", {"currency": 0.5}, True),
        ("lte", "0.5", {"currency": 0.75}, False),
        ("lte", "0.5", {"currency": True}, False),
    ],
)
def test_predicate_ops(
    tmp_path: Path, op: str, value: str, properties: dict[str, Any], expected: bool
) -> None:
    value_line = f"value = {value}" if value else ""
    assert matches(tmp_path, "currency", op, value_line, properties) is expected


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"order": {"total": 120}}, True),
        ({"order": {"total": 80}}, False),
        ({"order": 120}, False),  # the path goes through a non-object
        ({"order": {}}, False),
        ({"order.total": 120}, False),  # dots are path separators, not part of a key
    ],
)
def test_dotted_property_paths(tmp_path: Path, properties: dict[str, Any], expected: bool) -> None:
    assert matches(tmp_path, "order.total", "gte", "value = 100", properties) is expected


def test_all_predicates_of_a_rule_must_hold(tmp_path: Path) -> None:
    path = tmp_path / "journey.toml"
    path.write_text(
        """
stages = ["big-eur"]
[[rules]]
stage = "big-eur"
event = "Order Completed"
[[rules.where]]
property = "currency"
op = "eq"
value = "EUR"
[[rules.where]]
property = "revenue"
op = "gte"
value = 100
""",
        encoding="utf-8",
    )
    model = load_model(str(path))

    def stage(**properties: Any) -> str | None:
        facts = EventFacts("track", "Order Completed", "web", properties, [])
        return model.replay([facts])[1][0].stage

    assert stage(currency="EUR", revenue=150) == "big-eur"
    assert stage(currency="EUR", revenue=50) is None
    assert stage(currency="USD", revenue=150) is None
