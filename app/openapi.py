"""The OpenAPI document, rendered deterministically (``percorso openapi``; a test compares
it with ``openapi/openapi.json``)."""

from __future__ import annotations

import json

from app.config import Settings


def render() -> str:
    from app.main import create_app

    # The document does not depend on where the servers are; any URL will do.
    app = create_app(
        Settings(
            database_url="postgresql://localhost/percorso", kafka_bootstrap_servers="localhost:9092"
        )
    )
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
