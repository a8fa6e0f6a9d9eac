"""`percorso api` refuses a request whose head (request line and headers), or trailer
section, is longer than PERCORSO_HTTP_MAX_HEADER_BYTES (app.kit.http_protocol), and serves
every other: the real command, on a free port, over raw sockets."""

from __future__ import annotations

import base64
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.ingest.schemas import MAX_EVENT_BYTES
from app.kit.http_protocol import _LINGER_BYTES
from app.kit.kafka import ensure_topics
from tests.helpers import api_process, basic, closed, read_answer, send_past_the_answer

LIMIT = 64 * 1024  # the default
EVENT = {"userId": "ada", "event": "Product Viewed", "properties": {"sku": "P-1"}}


@pytest.fixture(scope="module")
async def api(
    settings: Settings, engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[int]:
    """`percorso api` with the default limit, publishing to a topic no pipeline consumes."""
    heads = settings.model_copy(update={"kafka_topic": f"{settings.kafka_topic}-heads"})
    await ensure_topics(heads)
    async with api_process(heads, tmp_path_factory.mktemp("api") / "api.log") as port:
        yield port


@pytest.fixture
def connection(api: int) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", api), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        yield sock


def _head(size: int, request_line: str = "GET /healthz HTTP/1.1", **headers: str) -> bytes:
    """A request head of exactly ``size`` bytes, padded by an X-Pad header."""
    start = f"{request_line}\r\nHost: percorso.test\r\n" + "".join(
        f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items()
    )
    start += "X-Pad: "
    pad = size - len(start) - len("\r\n\r\n")
    assert pad >= 0
    return start.encode() + b"a" * pad + b"\r\n\r\n"


def _send(sock: socket.socket, data: bytes, pieces: bool) -> None:
    """All at once, or in 1,000-byte writes a millisecond apart (several reads for the
    server)."""
    if not pieces:
        sock.sendall(data)
        return
    for at in range(0, len(data), 1000):
        sock.sendall(data[at : at + 1000])
        time.sleep(0.001)


@pytest.mark.parametrize("pieces", [False, True], ids=["whole", "in-pieces"])
def test_heads_of_the_limit_are_served_and_one_byte_more_is_431(
    connection: socket.socket, write_key: str, pieces: bool
) -> None:
    # A head that ends on the limit, with a body behind it in the same writes.
    body = orjson.dumps({"userId": "ada", "event": "Viewed", "properties": {"x": "y" * 20_000}})
    post = _head(
        LIMIT,
        "POST /v1/track HTTP/1.1",
        Authorization=basic(write_key)["authorization"],
        Content_Type="application/json",
        Content_Length=str(len(body)),
    )
    _send(connection, post + body, pieces)
    status, _, answer = read_answer(connection)
    assert (status, orjson.loads(answer)["success"]) == (200, True)

    # The next request on the connection has the whole limit again.
    _send(connection, _head(LIMIT), pieces)
    assert read_answer(connection)[0] == 200

    _send(connection, _head(LIMIT + 1), pieces)
    status, headers, answer = read_answer(connection)
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem = orjson.loads(answer)
    assert problem["status"] == 431
    assert problem["type"].endswith("/request-header-fields-too-large")
    assert problem["detail"] == f"a request's line and headers are at most {LIMIT} bytes"
    assert closed(connection)


def test_a_head_that_does_not_end_is_refused_once_over_the_limit(
    connection: socket.socket,
) -> None:
    # One header line that goes on: refused without waiting for its end.
    connection.sendall(b"GET /healthz HTTP/1.1\r\nX-Junk: " + b"a" * LIMIT)
    assert read_answer(connection)[0] == 431
    assert closed(connection)


def test_a_client_sending_on_past_a_431_reads_it_and_the_close(
    connection: socket.socket,
) -> None:
    # Refused at the limit, the header line going on 1,000 bytes every 0.1 s until 0.5 s
    # after the answer came: the connection lingers (2 s) for what comes.
    connection.sendall(b"GET /healthz HTTP/1.1\r\nX-Junk: " + b"a" * LIMIT)
    send_past_the_answer(connection, b"a" * 1000)
    assert read_answer(connection)[0] == 431
    assert connection.recv(1) == b""  # the server's close, not a reset


def test_a_client_flooding_past_a_431_is_closed_once_it_sent_the_linger_bytes(
    connection: socket.socket,
) -> None:
    connection.sendall(b"GET /healthz HTTP/1.1\r\nX-Junk: " + b"a" * LIMIT)
    # Read and dropped up to 8 MiB, then reset: what the kernel's buffers hold beside (up to
    # 32 MiB received and 4 MiB sent here) is all that comes more, not what the 2 s of the
    # linger's time would carry (gigabytes).
    assert _LINGER_BYTES <= _flooded(connection) < _LINGER_BYTES + 48 * 1024 * 1024
    assert read_answer(connection)[0] == 431  # which came before


def _flooded(sock: socket.socket) -> int:
    """Bytes sent, 64 KiB at a time, before a send was reset (at most 256 MiB)."""
    sent = 0
    while sent < 256 * 1024 * 1024:
        try:
            sock.sendall(b"a" * 65536)
        except (ConnectionResetError, BrokenPipeError):
            return sent
        sent += 65536
    raise AssertionError("never reset")


def test_a_request_line_over_the_limit_is_414(connection: socket.socket) -> None:
    connection.sendall(b"GET /healthz?pad=" + b"a" * LIMIT + b" HTTP/1.1\r\n\r\n")
    status, headers, answer = read_answer(connection)
    assert status == 414
    assert headers["content-type"] == "application/problem+json"
    assert orjson.loads(answer)["detail"] == f"a request line is at most {LIMIT} bytes"
    assert closed(connection)


def test_trailer_fields_over_the_limit_are_431(connection: socket.socket, write_key: str) -> None:
    head = (
        "POST /v1/track HTTP/1.1\r\nHost: percorso.test\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: application/json\r\nAuthorization: {basic(write_key)['authorization']}"
        "\r\n\r\n"
    ).encode()
    body = orjson.dumps(EVENT)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:9], body[9:]))
    connection.sendall(head + chunks + b"0\r\nX-Checksum: 1f3870be\r\n\r\n")
    assert read_answer(connection)[0] == 200

    # A trailer field that goes on, sent as a client streams it: refused once it is over the
    # limit (counted from the read after the last chunk's), without waiting for its end.
    connection.sendall(head + chunks + b"0\r\nX-Checksum: ")
    for _ in range(2 * LIMIT // 4096):
        if select.select([connection], [], [], 0)[0]:
            break
        connection.sendall(b"a" * 4096)
        time.sleep(0.002)
    status, _, answer = read_answer(connection)
    assert status == 431
    assert orjson.loads(answer)["detail"] == (
        f"a request's trailer fields are at most {LIMIT} bytes"
    )
    assert closed(connection)


def test_a_pixel_call_carrying_the_largest_event_is_served(api: int, write_key: str) -> None:
    # An event of 32 KB, the most there is: 43,692 characters of base64 in the URL.
    event = {"writeKey": write_key, "userId": "ada", "event": "Email Opened", "properties": {}}
    room = MAX_EVENT_BYTES - len(orjson.dumps({**event, "properties": {"text": ""}}))
    event["properties"] = {"text": "a" * room}
    assert len(orjson.dumps(event)) == MAX_EVENT_BYTES
    data = base64.b64encode(orjson.dumps(event))
    assert len(data) == 43_692
    url = f"/v1/pixel/track?data={quote(data, safe='')}"  # as clients encode it

    response = httpx.get(f"http://127.0.0.1:{api}{url}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["x-percorso-verdict"] == "accepted"
