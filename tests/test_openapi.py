"""The committed OpenAPI document is the one the code generates."""

from __future__ import annotations

from pathlib import Path

from app.main import create_app
from app.openapi import render

DOCUMENT = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_openapi_document_is_up_to_date() -> None:
    assert DOCUMENT.exists(), "run `make openapi` to generate openapi/openapi.json"
    assert DOCUMENT.read_text() == render(), "openapi/openapi.json is stale: run `make openapi`"


def test_every_operation_is_in_a_declared_section() -> None:
    document = create_app().openapi()
    declared = [tag["name"] for tag in document["tags"]]
    used = {
        tag for path in document["paths"].values() for op in path.values() for tag in op["tags"]
    }
    assert used == set(declared)
