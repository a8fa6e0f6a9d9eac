"""A client too slow to send a request does not hold its connection: a head must arrive
within PERCORSO_HTTP_HEAD_TIMEOUT_S of its first byte, a body must keep arriving, no gap
longer than PERCORSO_HTTP_BODY_TIMEOUT_S, and the whole request within
PERCORSO_HTTP_REQUEST_TIMEOUT_S of its first byte (app.kit.http_protocol); every other
request is served as before, however long the app takes to answer. Over raw sockets, against
the real command and against uvicorn serving a probe app with the API's protocol, both with
head and body timeouts of 1 s and request timeouts of 3 s and 2 s. A connection closed while
the client still sends lingers (PERCORSO_HTTP_LINGER_TIMEOUT_S, 3 s here): the client reads its
answer, and the server's close, never a reset, if it stops within the linger, and one that
never stops is still closed then.

The tests must pass on a loaded machine (a 2-core CI runner busy with the rest of the suite),
where a process may be descheduled for a good part of a second: a client's writes that must
not look idle to the server are a fifth of the timeout apart, an answer due at a timeout may
come seconds after it as long as that still tells it from what the test tells it apart from
(the end of a drip, another timeout, never), and every elapsed time is taken from before what
starts the server's clock."""

from __future__ import annotations

import asyncio
import queue
import select
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.sync.client import connect as ws_connect

from app.config import Settings
from app.ingest.schemas import MAX_BATCH_BYTES
from app.kit.http_protocol import _LINGER_BYTES
from app.kit.kafka import ensure_topics
from tests.helpers import (
    api_process,
    basic,
    closed,
    protocol_serving,
    read_answer,
    send_past_the_answer,
)

TIMEOUT = 1.0  # head and body, the real command's and the probe's
API_REQUEST_TIMEOUT = 3.0
REQUEST_TIMEOUT = 2.0  # the probe's
KEEP_ALIVE = 2  # the probe's; the real command's is uvicorn's, 5 s
LINGER = 3.0  # both's
# Between a client's writes that keep a head or a body coming: far within the timeout.
GAP = 0.2
# uvloop's clock counts whole milliseconds: a timer fires up to 1 ms early by the tests' own.
EARLY = 0.002
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: percorso.test\r\n\r\n"
EVENT = orjson.dumps({"userId": "ada", "event": "Product Viewed", "properties": {"sku": "P"}})


@pytest.fixture(scope="module")
async def api(
    settings: Settings, engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[int, Any]]:
    """`percorso api` with head and body timeouts of 1 s and a request timeout of 3 s,
    publishing to a topic no pipeline consumes; its port and log. Two worker processes:
    uvicorn hands them the protocol, pickled, with its timeouts."""
    slow = settings.model_copy(update={"kafka_topic": f"{settings.kafka_topic}-slow"})
    await ensure_topics(slow)
    log = tmp_path_factory.mktemp("api") / "api.log"
    env = {
        "PERCORSO_HTTP_HEAD_TIMEOUT_S": f"{TIMEOUT:g}",
        "PERCORSO_HTTP_BODY_TIMEOUT_S": f"{TIMEOUT:g}",
        "PERCORSO_HTTP_REQUEST_TIMEOUT_S": f"{API_REQUEST_TIMEOUT:g}",
        "PERCORSO_HTTP_LINGER_TIMEOUT_S": f"{LINGER:g}",
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
    """A new connection, for a test that takes no other fixture: one that takes time (a
    database's, as ``write_key``) would keep the connection silent longer than the head
    timeout, which closes it. Such a test connects once its fixtures are done."""
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
    # The server's close, not a reset: what the client sent meanwhile was read (the linger).
    assert sock.recv(1) == b""


def test_a_head_trickled_slower_than_the_timeout_is_408_and_closed(
    connection: socket.socket,
) -> None:
    # A byte every 0.2 s: never idle as long as the timeout, but late in all.
    started = time.monotonic()
    connection.sendall(b"GET /healthz HTTP/1.1\r\n")
    _drip(connection, b"Host: percorso.test\r\n\r\n", gap=GAP)
    _assert_408(connection, "a request's head must arrive within 1 s")
    # Answered at the timeout, not at the drip's end (4.6 s).
    assert TIMEOUT - EARLY <= time.monotonic() - started < TIMEOUT + 2.5


def test_heads_trickled_within_the_timeout_are_served_however_long_the_connection_lasts(
    connection: socket.socket,
) -> None:
    # Each head within the timeout of its first byte; the connection idle between them
    # (uvicorn's keep-alive timeout, 5 s, applies there) for longer than the timeout.
    for request in range(3):
        if request:
            time.sleep(1.3 * TIMEOUT)
        _trickle(connection, HEALTHZ, pieces=4, gap=0.05)
        assert read_answer(connection)[0] == 200


def test_a_new_connection_that_sends_nothing_is_closed_without_an_answer(api: Any) -> None:
    # Timed from before the connection: the server's clock starts as it accepts it, which
    # can come before the client's connect() returns.
    started = time.monotonic()
    with _connect(api[0]) as sock:
        assert sock.recv(1024) == b""
        # At the head timeout, not the keep-alive timeout (5 s), or never.
        assert TIMEOUT - EARLY <= time.monotonic() - started < TIMEOUT + 2.5


def test_a_new_connections_first_head_is_timed_from_the_connection(api: Any) -> None:
    # Its first byte within the timeout, the rest (the whole head) after: late by half a
    # timeout, though the head took less than the timeout from its first byte.
    with _connect(api[0]) as sock:
        time.sleep(0.8 * TIMEOUT)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.7 * TIMEOUT)
        sock.sendall(b"Host: percorso.test\r\n\r\n")
        _assert_408(sock, "a request's head must arrive within 1 s")


def test_a_body_that_stops_is_408_and_closed(api: Any, write_key: str) -> None:
    with _connect(api[0]) as connection:
        started = time.monotonic()
        connection.sendall(_track(write_key) + EVENT[:10])
        _assert_408(connection, "a request's body stopped arriving for 1 s")
        # At the body timeout, not the request timeout (3 s), or never.
        assert TIMEOUT - EARLY <= time.monotonic() - started < TIMEOUT + 1.8
    # The endpoint reading it was told, and did not fail (a 500, logged) for it.
    time.sleep(0.5)
    assert "Traceback" not in api[1].read_text()


def test_a_body_trickled_without_a_long_gap_is_served(api: Any, write_key: str) -> None:
    with _connect(api[0]) as connection:
        # Nine pieces 0.2 s apart: 1.6 s in all, more than the timeout (and within the
        # request timeout, 3 s).
        _trickle(connection, _track(write_key) + EVENT, pieces=2, gap=0.0)
        connection.sendall(_track(write_key))
        _trickle(connection, EVENT, pieces=9, gap=GAP)
        for _ in range(2):
            status, _, body = read_answer(connection)
            assert (status, orjson.loads(body)["success"]) == (200, True)


def test_a_body_dripped_within_the_body_timeout_but_past_the_request_timeout_is_408(
    api: Any, write_key: str
) -> None:
    # A byte every 0.2 s: never idle as long as the body timeout, but 3 s after its first
    # byte the request is not whole yet.
    with _connect(api[0]) as connection:
        started = time.monotonic()
        connection.sendall(_track(write_key))
        _drip(connection, EVENT[:-1], gap=GAP)
        _assert_408(connection, "a request must arrive whole within 3 s")
        # Answered at the timeout, not at the drip's end (13 s).
        elapsed = time.monotonic() - started
        assert API_REQUEST_TIMEOUT - EARLY <= elapsed < API_REQUEST_TIMEOUT + 2.5
    time.sleep(0.5)
    assert "Traceback" not in api[1].read_text()


def test_pipelined_requests_and_kept_alive_connections_are_served(api: Any, write_key: str) -> None:
    with _connect(api[0]) as connection:
        connection.sendall(HEALTHZ + _track(write_key) + EVENT + HEALTHZ)
        assert [read_answer(connection)[0] for _ in range(3)] == [200, 200, 200]
        time.sleep(1.3 * TIMEOUT)
        connection.sendall(HEALTHZ)
        assert read_answer(connection)[0] == 200


# A connection closed on a client still sending lingers: the client reads its answer and the
# server's close, not a reset, as long as it stops within the linger; else it is closed then.


def test_a_client_sending_on_past_a_408_reads_it_and_the_close(api: Any, write_key: str) -> None:
    with _connect(api[0]) as connection:
        # A byte every 0.1 s: 408 at the request timeout, 3 s; then 0.5 s more of it before
        # the client reads.
        connection.sendall(_track(write_key, b"a" * 1000))
        send_past_the_answer(connection, b"a")
        _assert_408(connection, "a request must arrive whole within 3 s")


def test_a_request_that_is_not_http_is_a_problem_400_read_before_the_close(
    connection: socket.socket,
) -> None:
    # A header line without a colon, then body bytes the client goes on sending: uvicorn
    # answered text/plain and closed at once, so the client's sends met a reset.
    connection.sendall(b"POST /v1/track HTTP/1.1\r\nHost: percorso.test\r\nno colon\r\n")
    send_past_the_answer(connection, b"a" * 1000)
    status, headers, body = read_answer(connection)
    assert (status, headers["content-type"]) == (400, "application/problem+json")
    assert headers["connection"] == "close"
    problem = orjson.loads(body)
    assert problem["type"].endswith("/invalid-request")
    assert problem["detail"] == (
        "the request is not valid HTTP/1.1 (its request line, headers or chunks)"
    )
    assert connection.recv(1) == b""


def test_a_client_sending_a_batch_whole_before_it_reads_gets_its_size_refused(
    api: Any, write_key: str
) -> None:
    # Python's urllib: Connection: close, and the whole body sent before the answer is read.
    # The API answers 400 at the head, by the Content-Length, and closes as 5 MB still come.
    request = urllib.request.Request(
        f"http://127.0.0.1:{api[0]}/v1/batch",
        data=b"a" * 5_000_000,
        headers={"Content-Type": "application/json", **basic(write_key)},
        method="POST",
    )
    assert MAX_BATCH_BYTES < 5_000_000 < _LINGER_BYTES
    for _ in range(5):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        with refused.value as answer:
            assert answer.status == 400
            assert orjson.loads(answer.read())["type"].endswith("/payload-too-large")


def test_a_client_that_never_stops_sending_is_closed_at_the_linger_timeout(
    api: Any, write_key: str
) -> None:
    with _connect(api[0]) as connection:
        # A byte every 0.1 s, through the 408 (at 3 s) and on.
        connection.sendall(_track(write_key, b"a" * 1000))
        send_past_the_answer(connection, b"a", after=0.0)
        # Reset as the linger ends, not at the 408, nor never; the answer came before.
        assert LINGER - 0.2 <= _sent_until_reset(connection) < LINGER + 2.5
        assert read_answer(connection)[0] == 408


def _sent_until_reset(sock: socket.socket) -> float:
    """Seconds a byte every 0.1 s was sent before a send was reset (at most LINGER + 5)."""
    started = time.monotonic()
    while time.monotonic() < started + LINGER + 5:
        time.sleep(0.1)
        try:
            sock.sendall(b"a")
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
    raise AssertionError("never reset")


# uvicorn serving a probe app with the API's protocol: endpoints slower than the client.


# What the probe's paths wait before they read a body (if they do) and answer: beyond the head
# and body timeouts, and beyond the request timeout.
SLOW = 1.3 * TIMEOUT
SLOWER = REQUEST_TIMEOUT + 0.3
_DELAYS = {"/slow": SLOW, "/read-late": SLOW, "/slower": SLOWER, "/read-later": SLOWER}


class _Probe:
    """``/read`` reads the body and says what it got; ``/slow`` and ``/slower`` answer after
    1.3 s and 2.3 s; ``/read-late`` and ``/read-later`` read the body after as long;
    ``/read-then-slower`` reads it, then answers after 2.3 s; ``/early`` answers without
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
            await asyncio.sleep(SLOWER)
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
        http_linger_timeout_s=LINGER,
    )
    with protocol_serving(app, settings, keep_alive=KEEP_ALIVE) as port:
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
        _assert_408(sock, "a request's body stopped arriving for 1 s")
        # At once: not as the connection is lost, at the linger's end (3 s), or as the client
        # goes.
        assert app.reads.get(timeout=LINGER / 2) == ("http.disconnect", 10)


def test_an_app_waiting_for_a_body_dripped_past_the_request_timeout_is_told_of_a_disconnect(
    probe: tuple[int, _Probe],
) -> None:
    port, app = probe
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(_post("/read", 200))
        _drip(sock, b"a" * 200, gap=GAP, size=5)  # 8 s, never idle for the body timeout
        _assert_408(sock, "a request must arrive whole within 2 s")
        # At the request timeout, not at the drip's end.
        assert REQUEST_TIMEOUT - EARLY <= time.monotonic() - started < REQUEST_TIMEOUT + 2.5
    kind, size = app.reads.get(timeout=5)
    assert kind == "http.disconnect"
    assert 0 < size < 200


def test_a_request_whole_in_time_is_answered_however_long_the_app_takes(
    probe: tuple[int, _Probe],
) -> None:
    port, app = probe
    with _connect(port) as sock:
        # Its body in 0.8 s, then 2.3 s of the app's: the request timeout long passed.
        sock.sendall(_post("/read-then-slower", 80))
        _drip(sock, b"a" * 80, gap=GAP, size=20)
        assert read_answer(sock)[:3:2] == (200, b"80")
        assert app.reads.get(timeout=5) == ("http.request", 80)
        # And the connection goes on.
        sock.sendall(_post("/read", 3) + b"abc")
        assert read_answer(sock)[:3:2] == (200, b"3")


def test_a_kept_alive_connection_serves_requests_for_longer_than_the_request_timeout(
    probe: tuple[int, _Probe],
) -> None:
    port, _ = probe
    with _connect(port) as sock:
        started = time.monotonic()
        for _ in range(4):  # each request whole in 0.4 s, the connection 3.2 s and more
            sock.sendall(_post("/read", 10))
            _drip(sock, b"a" * 10, gap=GAP, size=5)
            assert read_answer(sock)[:3:2] == (200, b"10")
            time.sleep(0.4)
        assert time.monotonic() - started > 1.5 * REQUEST_TIMEOUT


# Time the server holds a request up is not the client's. Each hold ends 1.3 s (past the body
# timeout), or 2.3 s (past the request timeout), after the request began; the client then
# takes 0.2 s to go on, and 1.2 s in all to end: within its own time, none of the hold's. (Long
# enough that the server's timer, every second, looks while the client still sends.)


@pytest.mark.parametrize("slow", ["/slow", "/slower"])
def test_a_pipelined_request_waiting_behind_a_slow_answer_is_served(
    probe: tuple[int, _Probe], slow: str
) -> None:
    port, app = probe
    with _connect(port) as sock:
        # The second request waits (reading paused) for the first's answer, then its body's
        # rest comes.
        sock.sendall(f"GET {slow} HTTP/1.1\r\nHost: p\r\n\r\n".encode() + _post("/read", 22))
        sock.sendall(b"a" * 10)
        assert read_answer(sock)[:3:2] == (200, b"0")
        _drip(sock, b"a" * 12, gap=GAP, size=2)
        assert read_answer(sock)[:3:2] == (200, b"22")
    assert app.reads.get(timeout=5) == ("http.request", 22)


@pytest.mark.parametrize("path", ["/read-late", "/read-later"])
def test_a_body_the_app_reads_late_is_served(probe: tuple[int, _Probe], path: str) -> None:
    port, app = probe
    with _connect(port) as sock:
        # Reading pauses at 64 KiB until the app reads.
        started = time.monotonic()
        sock.sendall(_post(path, 1_000_000) + b"a" * 999_988)
        time.sleep(max(0.0, _DELAYS[path] - (time.monotonic() - started)))
        _drip(sock, b"a" * 12, gap=GAP, size=2)
        assert read_answer(sock)[:3:2] == (200, b"1000000")
    assert app.reads.get(timeout=5) == ("http.request", 1_000_000)


@pytest.mark.parametrize("path", ["/read-late", "/read-later"])
def test_a_client_waiting_for_100_continue_is_served(probe: tuple[int, _Probe], path: str) -> None:
    port, app = probe
    with _connect(port) as sock:
        # Which the app asks for as it first reads.
        sock.sendall(_post(path, 6, "Expect: 100-continue"))
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        _drip(sock, b"hello!", gap=GAP)  # the first byte 0.2 s after, the last 1.2 s
        assert read_answer(sock)[:3:2] == (200, b"6")
    assert app.reads.get(timeout=5) == ("http.request", 6)


def test_a_connection_idle_after_an_answer_is_closed_at_the_keep_alive_timeout(
    probe: tuple[int, _Probe],
) -> None:
    port, _ = probe  # keep-alive: 2 s
    with _connect(port) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: p\r\n\r\n")
        assert read_answer(sock)[0] == 200
        time.sleep(1.3 * TIMEOUT)  # idle longer than the head timeout: still open
        sock.sendall(_post("/early", 5))
        assert read_answer(sock)[0] == 200
        # Answered before its body came, which comes after: idle from then on.
        time.sleep(0.1)
        started = time.monotonic()
        sock.sendall(b"hello")
        assert closed(sock)
        # At the keep-alive timeout, not the head or body timeout (1 s), or never.
        assert KEEP_ALIVE - EARLY <= time.monotonic() - started < KEEP_ALIVE + 2.5


# Stopped: closed at the body timeout, before the request timeout would have closed it.
# Dripped (never idle for the body timeout, 10 s in all): at the request timeout, long before
# the drip's end.
@pytest.mark.parametrize(
    ("dripped", "due", "before"),
    [(False, TIMEOUT, REQUEST_TIMEOUT - 0.1), (True, REQUEST_TIMEOUT, REQUEST_TIMEOUT + 2.5)],
    ids=["stopped", "dripped"],
)
def test_a_body_not_waited_for_by_an_app_that_answered_is_closed_on_without_an_answer(
    probe: tuple[int, _Probe], dripped: bool, due: float, before: float
) -> None:
    port, _ = probe
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(_post("/early", 100))
        assert read_answer(sock)[0] == 200
        if dripped:
            _drip(sock, b"a" * 100, gap=GAP, size=2)
        assert closed(sock)  # no 408 behind the answer
        assert due - EARLY <= time.monotonic() - started < before


_CHUNKED = b"POST %s HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
_BROKEN_CHUNK = b"zz\r\n"  # no chunk size


def test_a_body_whose_chunks_break_is_a_400_and_the_app_told_of_a_disconnect(
    probe: tuple[int, _Probe],
) -> None:
    port, app = probe
    with _connect(port) as sock:
        sock.sendall(_CHUNKED % b"/read")
        time.sleep(GAP)  # the app reads the first chunk and waits for more
        sock.sendall(_BROKEN_CHUNK)
        status, headers, body = read_answer(sock)
        assert (status, headers["content-type"]) == (400, "application/problem+json")
        assert orjson.loads(body)["type"].endswith("/invalid-request")
        assert app.reads.get(timeout=LINGER / 2) == ("http.disconnect", 5)
        assert closed(sock)  # the app's answer dropped


def test_chunks_that_break_after_the_app_answered_close_without_a_second_answer(
    probe: tuple[int, _Probe],
) -> None:
    port, _ = probe
    with _connect(port) as sock:
        sock.sendall(_CHUNKED % b"/early")
        assert read_answer(sock)[0] == 200
        sock.sendall(_BROKEN_CHUNK)
        assert closed(sock)  # no 400 behind the answer


def test_a_head_late_behind_a_slow_answer_closes_the_connection_after_that_answer(
    probe: tuple[int, _Probe],
) -> None:
    port, app = probe
    with _connect(port) as sock:
        # The second head late at 1 s, the first answer at 2.3 s.
        sock.sendall(b"GET /slower HTTP/1.1\r\nHost: p\r\n\r\nPOST /read HTTP/1.1\r\n")
        # The head's rest after, and some of its body: still coming as the connection closes.
        time.sleep(1.5)
        sock.sendall(b"Host: p\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
        status, headers, _ = read_answer(sock)
        assert status == 200  # not a 408 ahead of it, at 1 s
        assert headers["connection"] == "close"
        assert closed(sock)
    # Nor was the second request started, the connection lingering for it.
    with pytest.raises(queue.Empty):
        app.reads.get(timeout=1)


@pytest.mark.parametrize("after_a_request", [False, True], ids=["new", "kept-alive"])
def test_a_websocket_is_left_to_its_own_protocol(
    probe: tuple[int, _Probe], after_a_request: bool
) -> None:
    sock = _connect(probe[0])
    if after_a_request:
        # The upgrade's request looks to the HTTP protocol like the next one on a kept-alive
        # connection, and the connection idle after it: closed at the keep-alive timeout (2
        # s) unless the connection's timer stops at the upgrade.
        sock.sendall(b"GET /early HTTP/1.1\r\nHost: p\r\n\r\n")
        assert read_answer(sock)[0] == 200
    with ws_connect(f"ws://127.0.0.1:{probe[0]}/ws", sock=sock) as websocket:
        time.sleep(1.5 * KEEP_ALIVE)  # past the head, body and keep-alive timeouts
        websocket.send("still here")
        assert websocket.recv(timeout=2) == "still here"
