"""Routes served ahead of FastAPI's router (app.kit.direct): the same answers, errors
included, and every other request left to the router."""

from __future__ import annotations

import logging
import uuid
from functools import partial

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import PlainTextResponse, Response

from app.errors import InvalidRequest, install_error_handlers
from app.ingest.endpoints import DIRECT_ROUTES, router, rudderstack_router
from app.kit.direct import DirectRoutes, Fallback, checks, exact, with_uuid
from app.main import create_app


class Unhandled(Exception):
    pass


def _app(calls: list[str]) -> FastAPI:
    async def echo(request: Request) -> Response:
        calls.append("direct")
        body = await request.body()
        if body == b"bad":
            raise InvalidRequest("a bad body")
        if body == b"boom":
            raise Unhandled("a secret the answer must not show")
        return PlainTextResponse(body[::-1])

    async def declines(request: Request) -> Response:
        calls.append("declined")
        raise Fallback

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    async def routed(request: Request) -> Response:
        calls.append("router")
        return PlainTextResponse(b"routed")

    @app.get("/echo")
    async def get_echo() -> Response:
        calls.append("router")
        return PlainTextResponse(b"get")

    @app.get("/boom")
    async def routed_boom() -> Response:
        raise Unhandled("a secret the answer must not show")

    @app.get("/declined")
    async def routed_declined() -> Response:
        calls.append("router")
        return PlainTextResponse(b"from the router")

    app.add_middleware(
        DirectRoutes,
        routers=[exact("POST", {"/echo": echo}), exact("GET", {"/declined": declines})],
        handlers=app.exception_handlers,
    )
    return app


async def test_a_direct_route_answers_its_posts_and_leaves_the_rest_to_the_router() -> None:
    calls: list[str] = []
    transport = httpx.ASGITransport(app=_app(calls))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        posted = await client.post("/echo", content=b"abc")
        got = await client.get("/echo")
        elsewhere = await client.post("/echo/", content=b"abc")
    assert (posted.status_code, posted.content) == (200, b"cba")
    assert (got.status_code, got.content) == (200, b"get")
    assert elsewhere.status_code in (307, 404)  # the router's answer, whatever it is
    assert calls[:2] == ["direct", "router"]


async def test_a_direct_endpoint_can_leave_a_request_to_the_router() -> None:
    calls: list[str] = []
    transport = httpx.ASGITransport(app=_app(calls))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/declined")
    assert (response.status_code, response.content) == (200, b"from the router")
    assert calls == ["declined", "router"]


async def test_errors_get_the_apps_own_handlers_and_unhandled_ones_propagate() -> None:
    calls: list[str] = []
    transport = httpx.ASGITransport(app=_app(calls), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        bad = await client.post("/echo", content=b"bad")
        boom = await client.post("/echo", content=b"boom")
        routed = await client.get("/boom")
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["detail"] == "a bad body"
    assert bad.json()["instance"] == "/echo"
    assert boom.status_code == 500  # as from the router: Starlette's server error middleware
    assert boom.headers["content-type"] == "application/problem+json"
    assert boom.json() == {
        "type": "https://percorso.dev/problems/internal-error",
        "title": "Internal server error",
        "status": 500,
        "detail": "The request could not be answered; the error was logged.",
        "code": "internal-error",
        "message": "The request could not be answered; the error was logged.",
        "instance": "/echo",
    }
    assert routed.status_code == 500
    assert routed.json() == {**boom.json(), "instance": "/boom"}


@pytest.mark.parametrize(("method", "path"), [("POST", "/echo"), ("GET", "/boom")])
async def test_an_unexpected_error_reaches_the_server_to_be_logged_once(
    method: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Served directly or routed, the error goes on after its 500 answer, to the server,
    which logs it with its traceback (here the client raises it); nothing logs it before."""
    transport = httpx.ASGITransport(app=_app([]))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with caplog.at_level(logging.DEBUG), pytest.raises(Unhandled):
            await client.request(method, path, content=b"boom")
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []


def test_the_direct_tracking_routes_are_the_routes_fastapi_declares() -> None:
    declared = {
        route.path: route.endpoint
        for route in (*router.routes, *rudderstack_router.routes)
        if isinstance(route, APIRoute) and "POST" in route.methods
    }
    documented = create_app().openapi()["paths"]
    # Six calls and batch, each with its short path; batch as /v1/import and for beacons.
    assert len(DIRECT_ROUTES) == 16
    for path, endpoint in DIRECT_ROUTES.items():
        assert declared.get(path) is endpoint, path
        assert "post" in documented[path]


@pytest.mark.parametrize("path", ["/v1/track", "/v1/t"])
async def test_a_tracking_error_reads_as_the_routers_would(path: str) -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post(path, content=b"{", headers={"content-type": "text/csv"})
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["instance"] == path


def test_a_uuid_router_matches_its_template_only_and_passes_the_id() -> None:
    async def endpoint(customer_id: uuid.UUID, request: Request) -> Response:
        return PlainTextResponse(str(customer_id))

    route = with_uuid("GET", "/v1/things/{}/parts", endpoint)
    cid = uuid.uuid4()
    found = route("GET", f"/v1/things/{str(cid).upper()}/parts")
    assert isinstance(found, partial)
    assert found.args == (cid,)
    for method, path in [
        ("POST", f"/v1/things/{cid}/parts"),
        ("GET", f"/v1/things/{cid}/parts/"),
        ("GET", f"/v1/things/{cid.hex}/parts"),  # the router reads other spellings
        ("GET", "/v1/things/not-a-uuid/parts"),
    ]:
        assert route(method, path) is None, (method, path)


def test_checks_turn_a_refusal_into_a_fallback_and_let_the_rest_through() -> None:
    with pytest.raises(Fallback), checks(InvalidRequest):
        raise InvalidRequest("refused")
    with pytest.raises(Unhandled), checks(InvalidRequest):
        raise Unhandled
    with checks(InvalidRequest):
        pass
