"""Liveness, readiness and Prometheus metrics (no auth: for orchestrators and scrapers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.errors import problem_response
from app.ingest.publisher import Publisher
from app.spool.service import Spool

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is down."}})
async def readyz(request: Request) -> Any:
    """Ready to accept events: the database answers, and the broker is reachable or the
    spool (when on) has room for them."""
    checks = {"database": await _database_ok(request), "broker": await _broker_ok(request)}
    spool: Spool | None = request.state.spool
    if spool is not None:
        checks["spool"] = checks["database"] and spool.has_room()
    if checks["database"] and (checks["broker"] or checks.get("spool")):
        return {"status": "ok", "checks": checks}
    down = ", ".join(name for name, ok in checks.items() if not ok)
    return problem_response(
        503,
        "not-ready",
        "Not ready",
        f"unavailable: {down}",
        extra={"checks": checks},
        headers={"Retry-After": "5"},
    )


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    """Prometheus metrics of this API process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _database_ok(request: Request) -> bool:
    try:
        async with request.state.read_sessions() as session:
            await session.execute(text("SELECT 1"))
        return True
    except (SQLAlchemyError, OSError):
        return False


async def _broker_ok(request: Request) -> bool:
    """Whether the broker answers; False at once while the process spools: the broker did
    not acknowledge and the relay is the one to find out when it is back. Asking it then
    would wait out a hung broker's timeout (``KAFKA_PUBLISH_TIMEOUT_S``), longer than an
    orchestrator's probe gives, which would take the replica out of service while the
    spool takes its events."""
    publisher: Publisher = request.state.publisher
    if publisher.spooling:
        return False
    return await publisher.ready()
