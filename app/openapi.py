"""The OpenAPI document: edits made to it when FastAPI first builds it (:func:`amend`), and
its deterministic rendering (``percorso openapi``; a test compares it with
``openapi/openapi.json``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.config import Settings

Document = dict[str, Any]


def amend(app: FastAPI, edit: Callable[[Document], Document]) -> None:
    """Pass ``app``'s OpenAPI document through ``edit`` (after any edit installed before)."""
    generate = app.openapi

    def document() -> Document:
        if app.openapi_schema is None:
            app.openapi_schema = edit(generate())
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def inline(schema: Any, defs: Document | None = None) -> Any:
    """``schema`` with its ``#/$defs/…`` references replaced by what they name (``defs``,
    else the schema's own ``$defs``, which it then drops): for a schema that stands alone in
    the document (a query parameter's, a request body documented by hand), where such a
    reference would point at nothing."""
    if defs is None and isinstance(schema, dict) and "$defs" in schema:
        schema = dict(schema)
        defs = schema.pop("$defs")
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and defs:
            return inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: inline(value, defs) for key, value in schema.items()}
    if isinstance(schema, list):
        return [inline(value, defs) for value in schema]
    return schema


def render() -> str:
    from app.main import create_app

    # The document does not depend on where the servers are; any URL will do.
    app = create_app(
        Settings(
            database_url="postgresql://localhost/percorso", kafka_bootstrap_servers="localhost:9092"
        )
    )
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
