"""The README documents the presets' real rules, and its example model loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.journey.docs import rules_table
from app.journey.loader import PRESETS
from app.journey.model import load_model

README = Path(__file__).resolve().parents[2] / "README.md"


def journey_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Journey models")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


@pytest.mark.parametrize("preset", PRESETS)
def test_the_readme_tables_are_the_presets_rules(preset: str) -> None:
    # Regenerate with app.journey.docs.rules_table when a preset changes.
    assert rules_table(load_model(preset)) in journey_section()


def test_the_readme_example_model_is_valid(tmp_path: Path) -> None:
    example = re.search(r"```toml\n(.*?)```", journey_section(), re.DOTALL)
    assert example is not None
    path = tmp_path / "boutique.toml"
    path.write_text(example.group(1), encoding="utf-8")

    model = load_model(str(path))

    assert model.stages == ("visitor", "lead", "customer", "regular", "ambassador")
    assert [r.id for r in model.rules] == [
        "ambassador",
        "regular",
        "big-first-order",
        "customer",
        "lead",
    ]
