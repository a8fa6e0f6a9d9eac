"""The committed OpenAPI document is the one the code generates."""

from __future__ import annotations

from pathlib import Path

from app.openapi import render

DOCUMENT = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_openapi_document_is_up_to_date() -> None:
    assert DOCUMENT.exists(), "run `make openapi` to generate openapi/openapi.json"
    assert DOCUMENT.read_text() == render(), "openapi/openapi.json is stale: run `make openapi`"
