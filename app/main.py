"""The API process: ``create_app()`` wires routers, error handlers and the lifespan that
builds (and closes) the engine, session factory, authenticator, Kafka producer, and the
spool with its relay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app import openapi
from app.analytics.endpoints import router as analytics_router
from app.auth.dependencies import document_write_keys
from app.auth.service import Authenticator
from app.config import Settings
from app.contacts.endpoints import router as contacts_router
from app.customers.endpoints import direct_route as customers_direct
from app.customers.endpoints import router as customers_router
from app.dashboard.endpoints import create_router as dashboard_router
from app.db import create_engine, create_pool, create_read_session_factory
from app.email.endpoints import router as email_router
from app.email.keys import previous_secrets, server_secret
from app.email.tokens import TokenSigner
from app.errors import install_error_handlers
from app.health.endpoints import router as health_router
from app.ingest.browser import router as browser_router
from app.ingest.client import TrustedProxies
from app.ingest.cors import TrackingCors
from app.ingest.endpoints import direct_route as ingest_direct
from app.ingest.endpoints import is_tracking_path, rudderstack_router
from app.ingest.endpoints import router as ingest_router
from app.ingest.publisher import Publisher
from app.ingest.ratelimit import RateLimiter
from app.journey.endpoints import router as journey_router
from app.journey.model import load_model
from app.kit import gc
from app.kit.direct import DirectRoutes
from app.spool.relay import Relay
from app.spool.service import Spool
from app.suppressions.endpoints import router as suppressions_router
from app.timeline.endpoints import direct_route as timeline_direct
from app.timeline.endpoints import router as timeline_router

DESCRIPTION = """
Percorso is an open-source customer-journey backend.

* **Tracking API** (`/v1/track`, `/v1/page`, `/v1/identify`, `/v1/batch`, …) speaks Segment's
  HTTP Tracking API: authenticate with the source's write key as the HTTP Basic user name.
* **Pixel API** (`GET /v1/pixel/<type>?data=<base64 JSON>`, or as RudderStack's
  `GET /pixel/v1/<type>?writeKey=…&anonymousId=…&event=…`) and the **email** open pixel
  and click redirect (`/v1/email/open.gif`, `/v1/email/click`) with signed tokens.
* **Read API** (`/v1/customers/…`) serves unified profiles, timelines and
  journeys (`/v1/journey/model`: the active journey model), and journey analytics
  (`/v1/analytics/…`): authenticate with
  `Authorization: Bearer <read token>`.
* **Dashboard** (`/dashboard/`): a web page over the read API; sign in with a read token.
* **Privacy** (admin token): a customer's export (`GET /v1/customers/{id}/export`) and
  erasure (`DELETE /v1/customers/{id}`), and the suppression list (`/v1/suppressions`).

Errors are `application/problem+json` (RFC 9457).
"""


# The API reference's sections, in reading order.
TAGS = [
    {"name": "tracking", "description": "Segment-compatible calls, batches and the pixel API."},
    {"name": "email", "description": "Open pixel and click redirect of tracked emails."},
    {"name": "customers", "description": "Unified profiles, lookups and timelines."},
    {"name": "crm", "description": "Contact upserts and the changes feed."},
    {"name": "journey", "description": "A customer's journey, and the active journey model."},
    {
        "name": "analytics",
        "description": "Stage distribution, funnels, touchpoints, attribution, abandoned carts.",
    },
    {
        "name": "privacy",
        "description": "Export and erasure of a customer's data, and the suppression list.",
    },
    {"name": "operations", "description": "Health, readiness and metrics."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Parsed before start-up, so a typo in a setting stops the process instead of a request.
    proxies = TrustedProxies.parse(settings.trusted_proxies)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # First: an invalid model file stops start-up (JourneyModelError) before any I/O.
        journey_model = load_model(settings.journey_model)
        engine = create_engine(settings, application_name="percorso-api")
        sessions = create_read_session_factory(engine)
        read_pool = await create_pool(
            settings, size=settings.db_pool_size, min_size=0, application_name="percorso-api"
        )
        spool = Spool(read_pool, settings) if settings.spool_enabled else None
        publisher = Publisher(settings, spool)
        await publisher.start()
        relay = Relay(publisher, spool, read_pool, settings) if spool is not None else None
        if relay is not None:
            await relay.start()
        gc.tune()
        try:
            yield {
                "settings": settings,
                "read_sessions": sessions,
                "read_pool": read_pool,
                "authenticator": Authenticator(sessions, settings.auth_cache_ttl_s),
                "publisher": publisher,
                "spool": spool,
                "identity_config": settings.identity_config(),
                # Each of the N worker processes has its own buckets: each admits 1/N of
                # the rate, so the replica as a whole never admits more than configured.
                "rate_limiter": RateLimiter(
                    settings.ingest_rate_limit_per_s,
                    settings.ingest_rate_burst_s,
                    workers=settings.http_workers,
                ),
                "trusted_proxies": proxies,
                "email_signer": TokenSigner(server_secret(settings), previous_secrets(settings)),
                "journey_model": journey_model,
            }
        finally:
            if relay is not None:
                await relay.stop()
            await publisher.close()
            await read_pool.close()
            await engine.dispose()

    app = FastAPI(
        title="Percorso",
        version="0.1.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    openapi.amend(app, document_write_keys)
    # Inside the CORS policy: the tracking calls' POSTs, timeline pages and profiles skip
    # FastAPI's routing (app.kit.direct).
    app.add_middleware(
        DirectRoutes,
        routers=[ingest_direct, timeline_direct, customers_direct],
        handlers=app.exception_handlers,
    )
    app.add_middleware(TrackingCors, applies=is_tracking_path)
    # Routes are matched in turn, and FastAPI tries every route of each router before:
    # the busiest reads first (bench.readpath, before DirectRoutes served them: timeline
    # 3.94 M -> 3.54 M instructions a request, profile 2.08 M -> 1.81 M, against the
    # tracking routers first). They still come here for lookups, journeys and every read
    # DirectRoutes leaves to the router; OpenAPI keeps TAGS' order.
    app.include_router(timeline_router)
    app.include_router(customers_router)
    app.include_router(ingest_router)
    app.include_router(browser_router)
    app.include_router(rudderstack_router)
    app.include_router(email_router)
    app.include_router(contacts_router)
    app.include_router(journey_router)
    app.include_router(analytics_router)
    app.include_router(suppressions_router)
    app.include_router(health_router)
    if settings.dashboard_enabled:
        app.include_router(dashboard_router())
    return app
