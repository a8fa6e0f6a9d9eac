"""A client too slow to send a request does not hold its connection: a head must arrive
within PERCORSO_HTTP_HEAD_TIMEOUT_S of its first byte, a body must keep arriving, no gap
longer than PERCORSO_HTTP_BODY_TIMEOUT_S, and the whole request within
PERCORSO_HTTP_REQUEST_TIMEOUT_S of its first byte (app.kit.http_protocol); every other
request is served as before, however long the app takes to answer. Over raw sockets, against
the real command and against uvicorn serving a probe app with the API's protocol, both with
head and body timeouts of 0.3 s and request timeouts of 2 s and 1 s."""

from __future__ import annotations

import asyncio
import queue
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.sync.client import connect as ws_connect

from app.config import Settings
from app.kit.kafka import ensure_topics
from tests.helpers import api_process, basic, closed, protocol_serving, read_answer

TIMEOUT = 0.3
REQUEST_TIMEOUT = 1.0  # the probe's; the real command's is 2 s
# uvloop's clock counts whole milliseconds: a timer fires up to 1 ms early by the tests' own.
EARLY = 0.002
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: percorso.test\r\n\r\n"
EVENT = orjson.dumps({"userId": "ada", "event": "Product Viewed", "properties": {"sku": "P"}})


@pytest.fixture(scope="module")
async def api(
    settings: Settings, engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[int, Any]]:
    """`percorso api` with head and body timeouts of 0.3 s and a request timeout of 2 s,
    publishing to a topic no pipeline consumes; its port and log. Two worker processes:
    uvicorn hands them the protocol, pickled, with its timeouts."""
    slow = settings.model_copy(update={"kafka_topic": f"{settings.kafka_topic}-slow"})
    await ensure_topics(slow)
    log = tmp_path_factory.mktemp("api") / "api.log"
    env = {
        "PERCORSO_HTTP_HEAD_TIMEOUT_S": "0.3",
        "PERCORSO_HTTP_BODY_TIMEOUT_S": "0.3",
        "PERCORSO_HTTP_REQUEST_TIMEOUT_S": "2",
        "PERCORSO_HTTP_WORKERS": "2",
    }
    async with api_process(slow, log, **env) as port:
        yield port, log


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@pytest.fixture
def connection(api: tuple[int, Any]) -> Iterator[socket.socket]:
    with _connect(api[0]) as sock:
        yield sock


def _trickle(sock: socket.socket, data: bytes, pieces: int, gap: float) -> None:
    """``data`` in ``pieces`` writes, ``gap`` seconds apart."""
    size = -(-len(data) // pieces)
    for at in range(0, len(data), size):
        if at:
            time.sleep(gap)
        sock.sendall(data[at : at + size])


def _drip(sock: socket.socket, data: bytes, gap: float, size: int = 1) -> None:
    """``data`` ``size`` bytes at a time, ``gap`` seconds apart, until it is all sent or the
    server answers."""
    for at in range(0, len(data), size):
        time.sleep(gap)
        if select.select([sock], [], [], 0)[0]:
            return
        sock.sendall(data[at : at + size])


def _track(write_key: str, body: bytes = EVENT) -> bytes:
    return (
        "POST /v1/track HTTP/1.1\r\nHost: percorso.test\r\nContent-Type: application/json\r\n"
        f"Authorization: {basic(write_key)['authorization']}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()


def _assert_408(sock: socket.socket, detail: str) -> None:
    status, headers, body = read_answer(sock)
    assert status == 408
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem = orjson.loads(body)
    assert (problem["status"], problem["detail"]) == (408, detail)
    assert problem["type"].endswith("/request-timeout")
    assert closed(sock)


def test_a_head_trickled_slower_than_the_timeout_is_408_and_closed(
    connection: socket.socket,
) -> None:
    # A byte every 0.1 s: never idle as long as the timeout, but late in all.
    connection.sendall(b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()
    for byte in b"Host: percorso.test\r\n":
        time.sleep(0.1)
        try:
            connection.sendall(bytes([byte]))
        except OSError:  # closed under it
            break
    _assert_408(connection, "a request's head must arrive within 0.3 s")
    # Answered at the timeout, not at the trickle's end (2 s).
    assert time.monotonic() - started < 1.5


def test_heads_trickled_within_the_timeout_are_served_however_long_the_connection_lasts(
    connection: socket.socket,
) -> None:
    # Each head within the timeout of its first byte; the connection idle between them
    # (uvicorn's keep-alive timeout, 5 s, applies there) for longer than the timeout.
    for _ in range(3):
        _trickle(connection, HEALTHZ, pieces=4, gap=0.03)
        assert read_answer(connection)[0] == 200
        time.sleep(2 * TIMEOUT)


def test_a_new_connection_that_sends_nothing_is_closed_without_an_answer(api: Any) -> None:
    with _connect(api[0]) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert TIMEOUT - EARLY <= time.monotonic() - started < 1.5


def test_a_new_connections_first_head_is_timed_from_the_connection(api: Any) -> None:
    # Its first byte within the timeout, the rest after: late.
    with _connect(api[0]) as sock:
        time.sleep(TIMEOUT / 2)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(TIMEOUT * 2 / 3)
        sock.sendall(b"Host: percorso.test\r\n")
        _assert_408(sock, "a request's head must arrive within 0.3 s")


def test_a_body_that_stops_is_408_and_closed(
    api: Any, connection: socket.socket, write_key: str
) -> None:
    connection.sendall(_track(write_key) + EVENT[:10])
    started = time.monotonic()
    _assert_408(connection, "a request's body stopped arriving for 0.3 s")
    assert TIMEOUT - EARLY <= time.monotonic() - started < 1.5
    # The endpoint reading it was told, and did not fail (a 500, logged) for it.
    time.sleep(0.2)
    assert "Traceback" not in api[1].read_text()


def test_a_body_trickled_without_a_long_gap_is_served(
    connection: socket.socket, write_key: str
) -> None:
    # Ten pieces 0.1 s apart: a second in all, more than three timeouts.
    _trickle(connection, _track(write_key) + EVENT, pieces=2, gap=0.0)
    connection.sendall(_track(write_key))
    _trickle(connection, EVENT, pieces=10, gap=0.1)
    for _ in range(2):
        status, _, body = read_answer(connection)
        assert (status, orjson.loads(body)["success"]) == (200, True)


def test_a_body_dripped_within_the_body_timeout_but_past_the_request_timeout_is_408(
    api: Any, connection: socket.socket, write_key: str
) -> None:
    # A byte every 0.1 s: never idle as long as the body timeout, but 2 s after its first
    # byte the request is not whole yet.
    started = time.monotonic()
    connection.sendall(_track(write_key))
    _drip(connection, EVENT[:-1], gap=0.1)
    _assert_408(connection, "a request must arrive whole within 2 s")
    # Answered at the timeout, not at the drip's end (7 s).
    assert 2 - EARLY <= time.monotonic() - started < 3.5
    time.sleep(0.2)
    assert "Traceback" not in api[1].read_text()


def test_pipelined_requests_and_kept_alive_connections_are_served(
    connection: socket.socket, write_key: str
) -> None:
    connection.sendall(HEALTHZ + _track(write_key) + EVENT + HEALTHZ)
    assert [read_answer(connection)[0] for _ in range(3)] == [200, 200, 200]
    time.sleep(2 * TIMEOUT)
    connection.sendall(HEALTHZ)
    assert read_answer(connection)[0] == 200


# uvicorn serving a probe app with the API's protocol: endpoints slower than the client.


# What the probe's paths wait before they read a body (if they do) and answer: beyond the head
# and body timeouts, and beyond the request timeout.
_DELAYS = {
    "/slow": 2 * TIMEOUT,
    "/read-late": 2 * TIMEOUT,
    "/slower": 1.5 * REQUEST_TIMEOUT,
    "/read-later": 1.5 * REQUEST_TIMEOUT,
}


class _Probe:
    """``/read`` reads the body and says what it got; ``/slow`` and ``/slower`` answer after
    0.6 s and 1.5 s; ``/read-late`` and ``/read-later`` read the body after as long;
    ``/read-then-slower`` reads it, then answers after 1.5 s; ``/early`` answers without
    reading it. What each read ends in goes to ``reads``. A WebSocket echoes a message."""

    def __init__(self) -> None:
        self.reads: queue.Queue[tuple[str, int]] = queue.Queue()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":  # echoes
            await receive()
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": message["text"]})
            return
        path = scope["path"]
        await asyncio.sleep(_DELAYS.get(path, 0))
        size = 0
        if path.startswith("/read"):
            while True:
                message = await receive()
                size += len(message.get("body", b""))
                if message["type"] == "http.disconnect" or not message["more_body"]:
                    self.reads.put((message["type"], size))
                    break
        if path == "/read-then-slower":
            await asyncio.sleep(1.5 * REQUEST_TIMEOUT)
        body = str(size).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def probe() -> Iterator[tuple[int, _Probe]]:
    app = _Probe()
    settings = Settings(
        http_head_timeout_s=TIMEOUT,
        http_body_timeout_s=TIMEOUT,
        http_request_timeout_s=REQUEST_TIMEOUT,
    )
    with protocol_serving(app, settings) as port:
        yield port, app


def _post(path: str, length: int, *headers: str) -> bytes:
    lines = "".join(f"{header}\r\n" for header in headers)
    return f"POST {path} HTTP/1.1\r\nHost: p\r\nContent-Length: {length}\r\n{lines}\r\n".encode()


def test_an_app_waiting_for_a_body_that_stopped_is_told_of_a_disconnect(
    probe: tuple[int, _Probe],
) -> None:
    port, app = probe
    with _connect(port) as sock:
        sock.sendall(_post("/read", 100) + b"a" * 10)
        _assert_408(sock, "a request's body stopped arriving for 0.3 s")
    assert app.reads.get(timeout=2) == ("http.disconnect", 10)


def test_an_app_waiting_for_a_body_dripped_past_the_request_timeout_is_told_of_a_disconnect(
    probe: tuple[int, _Probe],
) -> None:
    port, app = probe
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(_post("/read", 100))
        _drip(sock, b"a" * 100, gap=0.1, size=5)  # 2 s, never idle for the body timeout
        _assert_408(sock, "a request must arrive whole within 1 s")
        assert REQUEST_TIMEOUT - EARLY <= time.monotonic() - started < 1.6
    kind, size = app.reads.get(timeout=2)
    assert kind == "http.disconnect"
    assert 0 < size < 100


def test_a_request_whole_in_time_is_answered_however_long_the_app_takes(
    probe: tuple[int, _Probe],
) -> None:
    port, app = probe
    with _connect(port) as sock:
        # Its body in 0.8 s, then 1.5 s of the app's: the request timeout long passed.
        sock.sendall(_post("/read-then-slower", 80))
        _drip(sock, b"a" * 80, gap=0.1, size=10)
        assert read_answer(sock)[:3:2] == (200, b"80")
        assert app.reads.get(timeout=2) == ("http.request", 80)
        # And the connection goes on.
        sock.sendall(_post("/read", 3) + b"abc")
        assert read_answer(sock)[:3:2] == (200, b"3")


def test_a_kept_alive_connection_serves_requests_for_longer_than_the_request_timeout(
    probe: tuple[int, _Probe],
) -> None:
    port, _ = probe
    with _connect(port) as sock:
        started = time.monotonic()
        for _ in range(5):  # each request whole in 0.2 s, the connection 2 s and more
            sock.sendall(_post("/read", 10))
            _drip(sock, b"a" * 10, gap=0.1, size=5)
            assert read_answer(sock)[:3:2] == (200, b"10")
            time.sleep(0.2)
        assert time.monotonic() - started > 2 * REQUEST_TIMEOUT


# Time the server holds a request up is not the client's. Each hold ends 0.6 s, or 1.5 s (past
# the request timeout), after the request began; the client then takes 0.15 s to go on, and
# 0.75 s in all to end: within its own time, none of the hold's.


@pytest.mark.parametrize("slow", ["/slow", "/slower"])
def test_a_pipelined_request_waiting_behind_a_slow_answer_is_served(
    probe: tuple[int, _Probe], slow: str
) -> None:
    port, app = probe
    with _connect(port) as sock:
        # The second request waits (reading paused) for the first's answer, then its body's
        # rest comes.
        sock.sendall(f"GET {slow} HTTP/1.1\r\nHost: p\r\n\r\n".encode() + _post("/read", 20))
        sock.sendall(b"a" * 10)
        assert read_answer(sock)[:3:2] == (200, b"0")
        _drip(sock, b"a" * 10, gap=0.15, size=2)
        assert read_answer(sock)[:3:2] == (200, b"20")
    assert app.reads.get(timeout=2) == ("http.request", 20)


@pytest.mark.parametrize("path", ["/read-late", "/read-later"])
def test_a_body_the_app_reads_late_is_served(probe: tuple[int, _Probe], path: str) -> None:
    port, app = probe
    with _connect(port) as sock:
        # Reading pauses at 64 KiB until the app reads.
        started = time.monotonic()
        sock.sendall(_post(path, 1_000_000) + b"a" * 999_990)
        time.sleep(_DELAYS[path] - (time.monotonic() - started))
        _drip(sock, b"a" * 10, gap=0.15, size=2)
        assert read_answer(sock)[:3:2] == (200, b"1000000")
    assert app.reads.get(timeout=2) == ("http.request", 1_000_000)


@pytest.mark.parametrize("path", ["/read-late", "/read-later"])
def test_a_client_waiting_for_100_continue_is_served(probe: tuple[int, _Probe], path: str) -> None:
    port, app = probe
    with _connect(port) as sock:
        # Which the app asks for as it first reads.
        sock.sendall(_post(path, 5, "Expect: 100-continue"))
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        _drip(sock, b"hello", gap=0.1)  # the first byte 0.1 s after, the last 0.5 s
        assert read_answer(sock)[:3:2] == (200, b"5")
    assert app.reads.get(timeout=2) == ("http.request", 5)


def test_a_connection_idle_after_an_answer_is_closed_at_the_keep_alive_timeout(
    probe: tuple[int, _Probe],
) -> None:
    port, _ = probe  # keep-alive: 1 s
    with _connect(port) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: p\r\n\r\n")
        assert read_answer(sock)[0] == 200
        time.sleep(0.5)  # idle longer than the head timeout: still open
        sock.sendall(_post("/early", 5))
        assert read_answer(sock)[0] == 200
        # Answered before its body came, which comes after: idle from then on.
        time.sleep(0.1)
        sock.sendall(b"hello")
        started = time.monotonic()
        assert closed(sock)
        assert 0.8 < time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    ("dripped", "timeout"), [(False, TIMEOUT), (True, REQUEST_TIMEOUT)], ids=["stopped", "dripped"]
)
def test_a_body_not_waited_for_by_an_app_that_answered_is_closed_on_without_an_answer(
    probe: tuple[int, _Probe], dripped: bool, timeout: float
) -> None:
    port, _ = probe
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(_post("/early", 100))
        assert read_answer(sock)[0] == 200
        if dripped:  # never idle for the body timeout: closed at the request timeout
            _drip(sock, b"a" * 100, gap=0.1, size=5)
        assert closed(sock)  # no 408 behind the answer
        assert timeout - EARLY <= time.monotonic() - started < timeout + 0.6


def test_a_head_late_behind_a_slow_answer_closes_the_connection_after_that_answer(
    probe: tuple[int, _Probe],
) -> None:
    port, _ = probe
    with _connect(port) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: p\r\n\r\nGET /slow HTTP/1.1\r\n")
        status, headers, _ = read_answer(sock)
        assert status == 200  # not a 408 ahead of it, at 0.3 s
        assert headers["connection"] == "close"
        assert closed(sock)


def test_a_websocket_is_left_to_its_own_protocol(probe: tuple[int, _Probe]) -> None:
    with ws_connect(f"ws://127.0.0.1:{probe[0]}/ws") as websocket:
        time.sleep(2 * TIMEOUT)
        websocket.send("still here")
        assert websocket.recv(timeout=2) == "still here"
