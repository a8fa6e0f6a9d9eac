"""Email open pixel and click redirect.

The reader's experience comes first: once the token is verified, the GIF is served and
the redirect happens even when recording fails (source disabled since the send, rate
limit, broker or database down); such a lost event is logged and counted, never shown to
the reader.
A missing, forged or tampered token is a 400 and never redirects: the destination is
only ever the URL that was signed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from prometheus_client import Counter

from app.auth.dependencies import authenticator
from app.config import Settings
from app.email import machine
from app.email.service import CLICKED, OPENED, email_touchpoint
from app.email.tokens import MAX_TOKEN_CHARS, EmailToken, InvalidToken, TokenSigner
from app.errors import as_problem
from app.ingest import pixel, service
from app.ingest.endpoints import admit, identity_of, publisher_of, sender_context

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/email", tags=["email"])

EMAIL_NOT_RECORDED = Counter(
    "percorso_email_events_not_recorded_total",
    "Verified email opens/clicks served but not recorded, by reason.",
    ["reason"],
)

TokenParam = Annotated[
    str | None,
    Query(
        alias="d",
        description="The signed token minted by `percorso email pixel` / `percorso email link`.",
        examples=["AQGWx2k3Vn0tZXhhbXBsZQ"],
        # Documented, not checked here: the token's own check words the 400 (no redirect).
        json_schema_extra={"pattern": "^[A-Za-z0-9_-]+$", "maxLength": MAX_TOKEN_CHARS},
    ),
]
_BAD_TOKEN: dict[int | str, dict[str, Any]] = {
    400: {"description": "Missing, forged or tampered token; no redirect."}
}


def _signer(request: Request) -> TokenSigner:
    signer: TokenSigner = request.state.email_signer
    return signer


async def _record(
    request: Request, token: EmailToken, event: str, machine_reason: str | None
) -> None:
    try:
        source = await authenticator(request).source_by_id(token.source_id)
        if source is None:
            EMAIL_NOT_RECORDED.labels("source_gone").inc()
            return
        admit(request, source, 1, check_origin=False)
        touchpoint = email_touchpoint(
            token,
            event,
            source=source,
            received_at=datetime.now(UTC),
            identity=identity_of(request),
            request_context=sender_context(request),
            machine_reason=machine_reason,
        )
        if touchpoint is None:
            EMAIL_NOT_RECORDED.labels("no_identifier").inc()
            return
        await publisher_of(request).publish(
            [(service.partition_key(touchpoint), touchpoint.to_bytes())]
        )
    except Exception as exc:
        # A refusal, or the database unavailable (service-unavailable; the broker has its own).
        problem = as_problem(exc)
        if problem is None:
            raise
        log.warning("email %s not recorded: %s", event, problem.type)
        EMAIL_NOT_RECORDED.labels(problem.type).inc()


@router.get(
    "/open.gif",
    summary="Email open pixel: records `Email Opened` and answers a 1x1 GIF.",
    response_class=Response,
    responses={
        200: {
            "description": "A transparent 1x1 GIF, never cached.",
            "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
        },
        **_BAD_TOKEN,
    },
)
async def email_open(request: Request, d: TokenParam = None) -> Response:
    """Opens fetched by mail privacy proxies (Apple MPP, Gmail/Yahoo image proxies) are
    recorded with the flags `machine_activity` and `machine:<reason>`."""
    token = _signer(request).verify(d)
    context = sender_context(request)
    reason = machine.open_reason(context.get("userAgent"), context.get("ip"))
    await _record(request, token, OPENED, reason)
    return Response(pixel.GIF, media_type="image/gif", headers=pixel.NO_CACHE)


@router.get(
    "/click",
    summary="Email click: records `Email Link Clicked` and redirects (302) to the signed URL.",
    response_class=RedirectResponse,
    status_code=302,
    responses={
        302: {
            "description": "Redirect to the destination URL signed into the token.",
            "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
        },
        **_BAD_TOKEN,
    },
)
async def email_click(request: Request, d: TokenParam = None) -> RedirectResponse:
    """Clicks by link scanners (security gateways, HTTP clients, a click within seconds
    of the send time in the token) are recorded with `machine_activity` flags."""
    token = _signer(request).verify(d)
    if token.url is None:
        raise InvalidToken("this token is an open pixel's, not a link's")
    settings: Settings = request.state.settings
    reason = machine.click_reason(
        request.headers.get("user-agent"),
        sent_at=token.sent_at,
        now=datetime.now(UTC),
        window=timedelta(seconds=settings.email_scanner_window_s),
    )
    await _record(request, token, CLICKED, reason)
    return RedirectResponse(
        token.url,
        status_code=302,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )
