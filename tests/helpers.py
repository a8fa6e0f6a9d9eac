"""Helpers shared by tests."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.config import Settings
from app.errors import PROBLEM_JSON
from app.kit.embedded import free_port
from app.kit.http_protocol import uvicorn_options


def basic(write_key: str) -> dict[str, str]:
    """Segment's auth: the write key as the HTTP Basic user name, empty password."""
    return {"authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def walk_pages(
    client: httpx.AsyncClient, token: str, url: str, **params: Any
) -> list[dict[str, Any]]:
    """Every page of a keyset-paged read, first to last, each passing the ``next_cursor``
    of the one before as ``cursor`` (fails if they never end)."""
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(url, params=query, headers=bearer(token))
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the pages never end"


async def wait_until(
    predicate: Any, *, timeout: float = 30.0, interval: float = 0.1, log: Path | None = None
) -> Any:
    """Poll an async predicate until it returns something truthy. On timeout the tail of
    ``log`` (a child process's output) goes into the failure message."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})\n{tail}")
        await asyncio.sleep(interval)


async def scalar(engine: Any, sql: str, *params: Any) -> Any:
    """One value from the database (tests only; ``sql`` is a literal in the test)."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params[0] if params else {})).scalar()


async def kill_api_connections(engine: Any) -> int:
    """Terminate the API's connections to the test database (as a database restart or a
    failover does); how many there were."""
    killed = await scalar(
        engine,
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = 'percorso-api' AND datname = current_database()",
    )
    return int(killed or 0)


@asynccontextmanager
async def api_process(settings: Settings, log: Path, **env: str) -> AsyncIterator[int]:
    """`percorso api` (the real command) on a free port, on the database and broker of
    ``settings``, with ``env`` (PERCORSO_ variables) besides; its port, once it answers
    /readyz. Its output goes to ``log``."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PERCORSO_")}
    environ.update(
        PERCORSO_ENVIRONMENT="test",
        PERCORSO_DATABASE_URL=settings.database_url or "",
        PERCORSO_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers or "",
        PERCORSO_KAFKA_TOPIC=settings.kafka_topic,
        PERCORSO_HTTP_PORT=str(port),
        PERCORSO_AUTH_CACHE_TTL_S="0",
        **env,
    )
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "api"], env=environ, stderr=out)
    try:

        async def serving() -> bool:
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(serving, timeout=60, log=log)
        yield port
    finally:
        proc.terminate()
        proc.wait(15)


@contextmanager
def protocol_serving(app: Any, settings: Settings, keep_alive: int = 1) -> Iterator[int]:
    """uvicorn serving the ASGI ``app`` with the API's protocol (app.kit.http_protocol) and
    the bounds ``settings`` give, in a thread, keep-alive ``keep_alive`` seconds; its port. A
    server of its own for each test: what an endpoint of a test before still does cannot
    reach it."""
    port = free_port()
    config = uvicorn.Config(
        app,
        port=port,
        loop="uvloop",
        lifespan="off",
        timeout_keep_alive=keep_alive,
        timeout_graceful_shutdown=1,
        log_level="warning",
        **uvicorn_options(settings),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The next HTTP answer on ``sock`` (one with a Content-Length): its status, headers
    (names in lower case) and body."""
    # Its head a byte at a time, its body to its length: nothing of an answer behind it.
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"the connection closed before an answer: {head!r}"
        head += byte
    status_line, *lines = head[:-4].decode().split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    body = b""
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(int(headers["content-length"]) - len(body))
        assert chunk, f"the connection closed within an answer: {head + body!r}"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (with nothing more to read). A reset counts: a
    server that closes a connection with bytes of the client's unread resets it, as it does
    once its linger (PERCORSO_HTTP_LINGER_TIMEOUT_S) is over."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def send_past_the_answer(sock: socket.socket, data: bytes, after: float = 0.5) -> float:
    """``data`` every 0.1 s, as a client sends a request that it reads no answer to before it
    has sent it all, until an answer has come and for ``after`` seconds more (at most 30 s
    in all); the monotonic time the answer came. Raises what a send raises: a reset, if the
    server closed the connection with bytes of it unread."""
    started = time.monotonic()
    answered = None
    while answered is None or time.monotonic() < answered + after:
        assert time.monotonic() < started + 30, "no answer"
        time.sleep(0.1)
        if answered is None and select.select([sock], [], [], 0)[0]:
            answered = time.monotonic()
        sock.sendall(data)
    return answered


@asynccontextmanager
async def refusing(engine: Any, check: str) -> AsyncIterator[None]:
    """``events`` refuses rows that fail ``check`` (SQL, a literal of the test's) meanwhile:
    the database refusing a message, as it does one it cannot store."""
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.execute(text(f"ALTER TABLE events ADD CONSTRAINT refusing CHECK ({check})"))
    try:
        yield
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE events DROP CONSTRAINT refusing"))


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``app`` over ASGI, the app's lifespan running. Every answer it gets
    must be one the app's OpenAPI document gives for the operation (:class:`Documented`)."""
    documented = Documented(app.openapi())
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://percorso.test",
            event_hooks={"response": [documented.check]},
        ) as client,
    ):
        yield client


class Documented:
    """Checks answers against an OpenAPI document: the status is one the operation lists,
    an error (4xx, 5xx) is a problem+json body of its status (its `code` and `message` the
    type's slug and the detail), and a success has a media type the document gives it. A
    request for no documented operation (an unknown path, a CORS preflight) is the router's
    to answer, and not checked."""

    def __init__(self, document: dict[str, Any]) -> None:
        # Literal paths before templated ones: /v1/customers/lookup is not a customer id.
        paths = sorted(document["paths"].items(), key=lambda item: item[0].count("{"))
        self._operations = [
            (re.compile("^" + re.sub(r"\{[^/}]+\}", "[^/]+", path) + "$"), path, operations)
            for path, operations in paths
        ]

    async def check(self, response: httpx.Response) -> None:
        method, path = response.request.method.lower(), response.request.url.path
        found = next(((p, ops) for rx, p, ops in self._operations if rx.match(path)), None)
        if found is None or method not in found[1]:
            return
        template, operation = found[0], found[1][method]
        status = str(response.status_code)
        name = f"{method.upper()} {template} answered {status}"
        documented = operation["responses"]
        assert status in documented, f"{name}, which is not documented: {sorted(documented)}"
        media_type = response.headers.get("content-type", "").split(";")[0]
        if status[0] in "45":
            await response.aread()
            assert media_type == PROBLEM_JSON, f"{name} as {media_type}"
            problem = response.json()
            assert problem["status"] == response.status_code, f"{name}: {problem}"
            assert {"type", "title", "detail"} <= problem.keys(), f"{name}: {problem}"
            slug = problem["type"].rsplit("/", 1)[-1]
            said = (problem.get("code"), problem.get("message"))
            assert said == (slug, problem["detail"]), f"{name}: {problem}"
        elif content := documented[status].get("content"):
            assert media_type in content, f"{name} as {media_type}, not {sorted(content)}"


async def profile_of(
    client: httpx.AsyncClient, token: str, kind: str, value: str
) -> dict[str, Any] | None:
    """The profile owning an identifier (``GET /v1/customers/lookup``); None if none does."""
    found = await client.get(
        "/v1/customers/lookup", params={"kind": kind, "value": value}, headers=bearer(token)
    )
    if found.status_code == 404:
        return None
    assert found.status_code == 200, found.text
    profile: dict[str, Any] = found.json()
    return profile
