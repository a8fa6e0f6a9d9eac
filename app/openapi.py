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


def inline(schema: Document) -> Document:
    """A pydantic model's JSON schema with its ``$defs`` written in place of their
    references, for a request body documented by hand (``openapi_extra``), where a
    reference to ``#/$defs/…`` would point at nothing."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: Document = resolve(schema)
    return resolved


def render() -> str:
    from app.main import create_app

    # The document does not depend on where the servers are; any URL will do.
    app = create_app(
        Settings(
            database_url="postgresql://localhost/percorso", kafka_bootstrap_servers="localhost:9092"
        )
    )
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
