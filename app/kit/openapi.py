"""Edits of an app's OpenAPI document, made once, when FastAPI first builds it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

Document = dict[str, Any]


def amend(app: FastAPI, edit: Callable[[Document], Document]) -> None:
    """Pass ``app``'s OpenAPI document through ``edit`` (after any edit installed before)."""
    generate = app.openapi

    def document() -> Document:
        if app.openapi_schema is None:
            app.openapi_schema = edit(generate())
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
