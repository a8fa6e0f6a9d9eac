"""A client that does not read its answer does not hold the endpoint making it: while the
connection's write buffer is full, the client must take 64 KiB of the answer every
PERCORSO_HTTP_SEND_TIMEOUT_S, or the connection is dropped and the endpoint told the client
went (app.kit.http_protocol). Over raw sockets with a small receive buffer, against uvicorn
serving a probe app with the API's protocol (a send timeout of 0.3 s), and against the real
command exporting a customer (1 s)."""

from __future__ import annotations

import asyncio
import queue
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.factories import touchpoint
from tests.helpers import api_process, bearer, protocol_serving, scalar, wait_until

TIMEOUT = 0.3
CHUNK = 64 * 1024
# uvloop's clock counts whole milliseconds: a timer fires up to 1 ms early by the tests' own.
EARLY = 0.002


class _Streams:
    """``/stream?n`` sends ``n`` chunks of 64 KiB, one send each, as a streamed answer does;
    ``/whole?n`` sends them in one. Then it asks whether the client is still there (what a
    streamed answer's ``receive()`` gives) and puts that in ``outcomes``, with the seconds it
    took."""

    def __init__(self) -> None:
        self.outcomes: queue.Queue[tuple[str, float]] = queue.Queue()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.monotonic()
        chunks = int(scope["query_string"])
        if scope["path"] == "/whole":
            headers = [(b"content-length", str(chunks * CHUNK).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"a" * CHUNK * chunks})
            self.outcomes.put(("sent", time.monotonic() - started))
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": b"a" * CHUNK, "more_body": True})
        outcome = (await receive())["type"]
        await send({"type": "http.response.body", "body": b""})
        self.outcomes.put((outcome, time.monotonic() - started))


@pytest.fixture
def streams() -> Iterator[tuple[int, _Streams]]:
    app = _Streams()
    with protocol_serving(app, Settings(http_send_timeout_s=TIMEOUT)) as port:
        yield port, app


def _reader(port: int, buffer: int = 4096, segment: int | None = None) -> socket.socket:
    """A connection that takes little at a time: a receive buffer of 4 KiB; ``segment``:
    TCP segments of at most as many bytes (the kernel then buffers less of an answer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    if segment is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, segment)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def _read(sock: socket.socket, most: int = 1 << 30, gap: float = 0.0) -> bytes:
    """What ``sock`` gives until it closes (or ``most`` bytes), a read every ``gap`` s."""
    data = bytearray()
    while len(data) < most:
        time.sleep(gap)
        try:
            chunk = sock.recv(min(most - len(data), 1 << 20))
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_a_streamed_answer_the_client_does_not_read_is_dropped_and_the_app_told(
    streams: tuple[int, _Streams],
) -> None:
    port, app = streams
    with _reader(port) as sock:
        sock.sendall(b"GET /stream?256 HTTP/1.1\r\nHost: p\r\n\r\n")  # 16 MiB
        # The endpoint is told once the client took nothing for the timeout, and does not
        # wait for it any longer.
        outcome, seconds = app.outcomes.get(timeout=5)
        assert outcome == "http.disconnect"
        assert TIMEOUT - EARLY <= seconds < 2
        # What the kernel's buffers held, then the end: far from the 16 MiB.
        assert len(_read(sock)) < 8 * 1024 * 1024


def test_an_answer_written_whole_and_never_read_is_dropped(
    streams: tuple[int, _Streams],
) -> None:
    port, app = streams
    with _reader(port) as sock:
        sock.sendall(b"GET /whole?256 HTTP/1.1\r\nHost: p\r\n\r\n")
        assert app.outcomes.get(timeout=5)[0] == "sent"  # into the buffer, at once
        # Closed at the keep-alive timeout (1 s), its buffer held it until the client read it
        # all: now the connection is dropped, the 16 MiB freed.
        time.sleep(1.5)
        assert len(_read(sock)) < 8 * 1024 * 1024


def test_a_client_reading_slower_than_the_app_gets_the_whole_answer(
    streams: tuple[int, _Streams],
) -> None:
    port, app = streams
    with _reader(port, buffer=8192, segment=1000) as sock:
        sock.sendall(b"GET /whole?16 HTTP/1.1\r\nHost: p\r\n\r\n")  # 1 MiB, written at once
        # 8 KiB every 10 ms (about 800 KB/s): writing stays paused for longer than the
        # timeout, the client taking 64 KiB and more in each.
        started = time.monotonic()
        answer = _read(sock, most=16 * CHUNK + 1000, gap=0.01)
        assert time.monotonic() - started > 3 * TIMEOUT
        assert answer.endswith(b"\r\n\r\n" + b"a" * 16 * CHUNK)
    assert app.outcomes.get(timeout=2)[0] == "sent"


def test_a_client_dripping_its_reads_is_dropped(streams: tuple[int, _Streams]) -> None:
    port, app = streams
    with _reader(port) as sock:
        sock.sendall(b"GET /stream?256 HTTP/1.1\r\nHost: p\r\n\r\n")
        time.sleep(0.5)
        # 1 KiB every 0.1 s: the connection kept busy, the answer hardly moving.
        started = time.monotonic()
        while app.outcomes.empty():
            _read(sock, most=1024)
            time.sleep(0.1)
            assert time.monotonic() - started < 5
        assert app.outcomes.get()[0] == "http.disconnect"


# The real command: a customer's export, streamed from a database transaction.


@pytest.fixture(scope="module")
async def api(
    settings: Settings, engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[int, Any]]:
    """`percorso api` with a send timeout of 1 s; its port and log."""
    log = tmp_path_factory.mktemp("api") / "api.log"
    async with api_process(settings, log, PERCORSO_HTTP_SEND_TIMEOUT_S="1") as port:
        yield port, log


async def _open_transactions(engine: AsyncEngine) -> int:
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
    )
    return int(await scalar(engine, sql))


async def test_an_export_the_client_stops_reading_ends_its_transaction(
    api: tuple[int, Any],
    engine: AsyncEngine,
    handle: Any,
    source_id: uuid.UUID,
    read_token: str,
    admin_token: str,
) -> None:
    port, log = api
    # 400 events of 20 KB: an export of 8 MB, more than the kernel's buffers hold.
    big = {"text": "a" * 20_000}
    await handle([touchpoint(source_id, user_id="ada", properties=big, at=i) for i in range(400)])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        profile = await client.get(
            "/v1/customers/lookup",
            params={"kind": "user_id", "value": "ada"},
            headers=bearer(read_token),
        )
    customer = profile.json()["id"]
    sock = _reader(port)
    with sock:
        headers = "".join(f"{k}: {v}\r\n" for k, v in bearer(admin_token).items())
        sock.sendall(f"GET /v1/customers/{customer}/export HTTP/1.1\r\n{headers}\r\n".encode())
        # The export holds its snapshot while it waits on the client; the client reads
        # nothing, and a second later it is gone.
        await wait_until(lambda: _has(engine, 1), timeout=10, interval=0.05)
        await wait_until(lambda: _has(engine, 0), timeout=5, interval=0.05, log=log)
        answer = await asyncio.to_thread(_read, sock)
    lines = answer.split(b"\r\n\r\n", 1)[1]
    assert b'"record":"export"' in lines
    assert b'"record":"end"' not in lines  # cut short, as a client sees it
    assert "Connection dropped" in log.read_text()
    assert "Traceback" not in log.read_text()


async def _has(engine: AsyncEngine, transactions: int) -> bool:
    return await _open_transactions(engine) == transactions
