"""The API process: ``create_app()`` wires routers, error handlers and the lifespan that
builds (and closes) the engine, session factory, authenticator and Kafka producer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.auth.service import Authenticator
from app.config import Settings
from app.customers.endpoints import router as customers_router
from app.db import create_engine, create_session_factory
from app.errors import install_error_handlers
from app.health.endpoints import router as health_router
from app.identity.identifiers import IdentityConfig
from app.ingest.endpoints import router as ingest_router
from app.ingest.publisher import Publisher
from app.timeline.endpoints import router as timeline_router

DESCRIPTION = """
Percorso is an open-source customer-journey backend.

* **Tracking API** (`/v1/track`, `/v1/page`, `/v1/identify`, `/v1/batch`, …) speaks Segment's
  HTTP Tracking API: authenticate with the source's write key as the HTTP Basic user name.
* **Read API** (`/v1/customers/…`) serves unified profiles and timelines: authenticate with
  `Authorization: Bearer <read token>`.

Errors are `application/problem+json` (RFC 9457).
"""


def identity_config(settings: Settings) -> IdentityConfig:
    return IdentityConfig(
        default_phone_region=settings.default_phone_region,
        extra_blocked_values=settings.blocked_values,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        engine = create_engine(settings)
        sessions = create_session_factory(engine)
        publisher = Publisher(settings)
        await publisher.start()
        try:
            yield {
                "settings": settings,
                "session_factory": sessions,
                "authenticator": Authenticator(sessions, settings.auth_cache_ttl_s),
                "publisher": publisher,
                "identity_config": identity_config(settings),
            }
        finally:
            await publisher.close()
            await engine.dispose()

    app = FastAPI(
        title="Percorso",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(ingest_router)
    app.include_router(customers_router)
    app.include_router(timeline_router)
    app.include_router(health_router)
    return app
