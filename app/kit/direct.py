"""Routes served straight from ASGI, ahead of FastAPI's router.

Before an endpoint runs, FastAPI passes a request through its exception middleware, its
router (which tries the app's routes in turn), the route's request-response wrapper and its
dependency solver. For the busiest routes that decides little, and it costs about 0.2 ms of
CPU a request: under the bench's ``/v1/batch`` load, a plain ASGI app that only parses the
body used 0.57 ms a request, FastAPI doing the same 0.77. Served directly, the API's
``/v1/batch`` took 1.59 ms of CPU a request instead of 1.80, and ``/v1/track`` 0.55 instead
of 0.85 (medians of 6 interleaved rounds against the same broker); a timeline page 3.08 M
instructions instead of 3.54 M, a profile 1.35 M instead of 1.81 M (``bench.readpath``).

:class:`DirectRoutes` asks each of its routers (``(method, path) → endpoint or None``) for
an endpoint, calls it with the request, and answers what it raises with the app's own
exception handlers, so the response is what the router would have given. An endpoint that
would need FastAPI's help (a parameter to reject, a credential to refuse) raises
:class:`Fallback` (:func:`checks`) before it has read the body or answered, and the request
goes to the router, which words the error. :func:`exact` and :func:`with_uuid` make the
routers. The routes stay declared in FastAPI (OpenAPI, other methods).
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, HTTPExceptionHandler, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
# (method, path) → the endpoint serving it directly, or None.
Router = Callable[[str, str], Endpoint | None]

# A UUID as FastAPI reads a ``uuid.UUID`` path parameter, in its usual spelling only (the
# router reads the others).
_UUID = "([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"


class Fallback(Exception):
    """Raised by a direct endpoint, before it read the body or answered, for a request
    the router should answer instead."""


class DirectRoutes:
    """ASGI middleware: requests that one of ``routers`` has an endpoint for are answered
    by it directly; every other request goes on to ``app``. ``handlers`` are the app's
    exception handlers (``FastAPI.exception_handlers``, read per error, so handlers added
    later count); an exception none of them handles propagates, as from the router, to
    Starlette's server error middleware (which runs the handler of ``Exception``)."""

    def __init__(
        self,
        app: ASGIApp,
        routers: Sequence[Router],
        handlers: Mapping[Any, HTTPExceptionHandler],
    ) -> None:
        self.app = app
        self.routers = routers
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self._endpoint(scope["method"], scope["path"]) if scope["type"] == "http" else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Fallback:
            await self.app(scope, receive, send)
            return
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _endpoint(self, method: str, path: str) -> Endpoint | None:
        for router in self.routers:
            endpoint = router(method, path)
            if endpoint is not None:
                return endpoint
        return None

    def _handler_for(self, exc: Exception) -> HTTPExceptionHandler | None:
        # As Starlette's exception middleware looks one up: the closest class first, short of
        # Exception, whose handler Starlette's server error middleware runs (it answers, then
        # raises the error again for the server to log).
        for cls in type(exc).__mro__:
            if cls is Exception:
                break
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None


def exact(method: str, routes: Mapping[str, Endpoint]) -> Router:
    """A router for ``routes`` (path → endpoint) under one method."""

    def route(requested: str, path: str) -> Endpoint | None:
        return routes.get(path) if requested == method else None

    return route


def with_uuid(
    method: str, template: str, endpoint: Callable[[uuid.UUID, Request], Awaitable[Response]]
) -> Router:
    """A router for the paths of ``template`` (``{}`` where a UUID path parameter goes)
    under ``method``: ``endpoint`` is called with the UUID and the request."""
    before, after = template.split("{}")
    pattern = re.compile(re.escape(before) + _UUID + re.escape(after))

    def route(requested: str, path: str) -> Endpoint | None:
        found = pattern.fullmatch(path) if requested == method else None
        return partial(endpoint, uuid.UUID(found[1])) if found else None

    return route


class checks:  # lower case, as contextlib.suppress: `with checks(...):`
    """Around a direct endpoint's checks (credential, parameters): one that refuses the
    request raises :class:`Fallback` instead, and the router words the error. (A class,
    not a generator: this runs on every direct read.)"""

    __slots__ = ("refusals",)

    def __init__(self, *refusals: type[Exception]) -> None:
        self.refusals = refusals

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None and issubclass(kind, self.refusals):
            raise Fallback from None
