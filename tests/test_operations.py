"""Health, readiness, metrics, and what the API does when the broker is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.kit.embedded import free_port
from app.main import create_app
from tests.helpers import basic, scalar, serving


async def test_health_ready_and_metrics_need_no_credentials(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/healthz")).json() == {"status": "ok"}
    ready = await app_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": True}
    metrics = await app_client.get("/metrics")
    assert metrics.status_code == 200
    assert "percorso_ingest_events_accepted_total" in metrics.text


@pytest.fixture
async def brokerless_client(
    settings: Settings, db: AsyncEngine
) -> AsyncIterator[httpx.AsyncClient]:
    nowhere = settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
            "kafka_publish_timeout_s": 1.0,
        }
    )
    async with serving(create_app(nowhere)) as client:
        yield client


async def test_without_a_broker_events_get_503_with_retry_after_and_readiness_fails(
    brokerless_client: httpx.AsyncClient, write_key: str, db: AsyncEngine
) -> None:
    response = await brokerless_client.post(
        "/v1/track", json={"userId": "u", "event": "Product Viewed"}, headers=basic(write_key)
    )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    ready = await brokerless_client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": True, "broker": False}
    assert await scalar(db, "SELECT count(*) FROM events") == 0
