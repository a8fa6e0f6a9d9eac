"""CORS for the tracking API, so browsers (analytics.js, ``sendBeacon``) can post to it.

Preflights are answered for any origin: the write key, and so the source whose
``allowed_origins`` decide, travels in the actual request (header or body), which a
preflight does not carry. The actual request is then checked against the source's
setting (:func:`refuse_origin`); a refused origin gets a 403 without
``Access-Control-Allow-Origin``, so the browser hides the answer too. A source whose stored
``allowed_origins`` does not read refuses every origin so (the preflight still passes: it
cannot tell the source), and says why in the 403's detail. Responses to allowed
origins echo the origin (no credentials: analytics.js sends none). Every response says it
varies by ``Origin``, those to requests without one too.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Forbidden
from app.ingest.source_settings import SourcePolicy

_DENIED = "percorso.cors_denied"
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "authorization, content-type, content-encoding, x-write-key"
MAX_AGE_S = "86400"


def refuse_origin(request: Request, policy: SourcePolicy) -> None:
    """Refuse (403) a browser origin the source's ``policy`` does not allow; the response
    carries no CORS grant. A request without ``Origin`` (a server) is never refused here."""
    origin = request.headers.get("origin")
    if origin is None or policy.allows_origin(origin):
        return
    request.scope[_DENIED] = True
    if policy.origins_invalid:
        # Neither the stored values (the log has them) nor the key: only what to fix.
        raise Forbidden(
            "this source's stored allowed_origins setting is invalid, so no browser origin"
            " may send with its write key until an operator fixes it (requests without an"
            " Origin header are not affected)"
        )
    raise Forbidden(f"origin {origin[:200]} is not allowed to send to this source")


class TrackingCors:
    """ASGI middleware applying the policy above to paths for which ``applies`` is true."""

    def __init__(self, app: ASGIApp, applies: Callable[[str], bool]) -> None:
        self.app = app
        self.applies = applies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if origin is not None and preflight:
            await self._preflight(origin, headers, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                # Every answer, with an Origin or without, varies by it: a shared cache must
                # not give a browser the copy that lacks its grant (the settings documents
                # are public for minutes).
                out.add_vary_header("Origin")
                if origin is not None and not scope.get(_DENIED):
                    out["Access-Control-Allow-Origin"] = origin
                    out["Access-Control-Expose-Headers"] = "Retry-After"
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    async def _preflight(origin: str, headers: Headers, send: Send) -> None:
        requested = headers.get("access-control-request-headers")
        response_headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-allow-headers", (requested or ALLOWED_HEADERS).encode("latin-1")),
            (b"access-control-max-age", MAX_AGE_S.encode()),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": response_headers})
        await send({"type": "http.response.body", "body": b""})
