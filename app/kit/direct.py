"""Routes served straight from ASGI, ahead of FastAPI's router.

Before an endpoint runs, FastAPI passes a request through its exception middleware, its
router (which tries the app's routes in turn), the route's request-response wrapper and its
dependency solver. For an endpoint that takes the bare ``Request`` and returns a
``Response``, all of that decides nothing, and it costs about 0.2 ms of CPU a request: under
the bench's ``/v1/batch`` load, a plain ASGI app that only parses the body used 0.57 ms a
request, FastAPI doing the same 0.77. Served directly, the API's ``/v1/batch`` took 1.59 ms
of CPU a request instead of 1.80, and ``/v1/track`` 0.55 instead of 0.85 (medians of 6
interleaved rounds against the same broker).

:class:`DirectRoutes` serves such endpoints by exact path and method, and answers what
they raise with the app's own exception handlers, so the response is what the router would
have given. The routes stay declared in FastAPI (OpenAPI, other methods, other paths).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, HTTPExceptionHandler, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """ASGI middleware: ``routes`` (path → endpoint) for POST requests, answered directly;
    every other request goes on to ``app``. ``handlers`` are the app's exception handlers
    (``FastAPI.exception_handlers``, read per error, so handlers added later count); an
    exception none of them handles propagates, as from the router."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[str, Endpoint],
        handlers: Mapping[Any, HTTPExceptionHandler],
    ) -> None:
        self.app = app
        self.routes = routes
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self.routes.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> HTTPExceptionHandler | None:
        # As Starlette's exception middleware looks one up: the closest class first.
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None
