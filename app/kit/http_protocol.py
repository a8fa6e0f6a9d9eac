"""uvicorn's httptools protocol, with bounds on what a request may take: the size of its head,
the time its head, its body and the whole of it take to arrive, and the time its answer may
wait on a client that does not read it.

httptools has no limit on a head's size: a client could send one endless header line, and
the server kept every byte of it (it buffers a header until the header ends), then routed the
request as any other. :class:`BoundedProtocol` answers a head (request line and header lines,
to the blank line that ends them) longer than the limit with 414 URI Too Long when the
request line alone is over it, else 431 Request Header Fields Too Large, and closes the
connection, as soon as the limit is passed, without waiting for the head to end. A chunked
body's trailer fields, which httptools buffers alike, are held to the same limit. The limit
is uvicorn's own for heads, ``h11_max_incomplete_event_size``, which only its h11 protocol
applied.

A head is measured in the bytes received, not in the parser's callbacks (httptools hands
a header over only once it has buffered all of it): no work per header, a comparison and a
subtraction per read. The bytes of a read that follow the end of a request (a pipelined
request, sent before the answer to the one before: no browser or SDK does) or the size line
of a body's last chunk are not counted, so those may take up to the limit and a read (at
most 256 KiB) more.

Nor had uvicorn a timeout for a request in progress, only for the idle time between two
(``timeout_keep_alive``, 5 s): a client sending a head or a body a byte every few seconds held
its connection, and its buffers, for as long as it liked. Here a request's head must arrive
whole within ``head_timeout_s`` of its first byte (a new connection's first request, of the
connection), and its body must keep arriving, never ``body_timeout_s`` without a byte of it (an
idle timeout, as nginx's ``client_body_timeout``), and the whole of it, head and body, within
``request_timeout_s`` of its first byte (as Node's ``requestTimeout``): a body dripped a byte
just within the body timeout would otherwise take as long as its size allows (a 4 MB batch:
years), holding the connection and its buffers. The time the app takes to answer is not the
client's: once the body is in, no timeout runs. A request that is late is answered 408 Request
Timeout, as problem+json, and the connection closed; a new connection that sent nothing is
closed without an answer, as an idle one is, for it asked nothing. A body that stops is
answered so only while the app has not answered; after, the connection is closed. An app
waiting on ``receive()`` for the rest of that body gets ``http.disconnect`` at once (so for a
whole request that is late). A head that is late while the app still answers the request before
it (pipelined) lets that answer go out, then closes. Time the server itself holds a request up
(reading paused while the app has yet to read 64 KiB of body received, or while a pipelined
request waits for the one before it; a client waiting for ``100 Continue``) is not the
client's: none of the request's deadlines (its head's or body's, and the whole request's) falls
due while a hold lasts, and each moves on by as long as it lasted as it ends.

Answers, the other way: uvicorn stops an app's ``send()`` while the transport's buffer is full
(its flow control), until the client reads enough to drain it: a client that never reads a
large answer (a customer's export, streamed from a database transaction held open) kept the app
waiting, the transaction open, for ever, and a connection closed while its buffer is full waits
for the buffer to drain before it closes, for ever too. While writing is paused, the client
must take 64 KiB of the answer (the buffer's high water mark, beyond which writing pauses;
counted in the kernel's buffer too, on Linux) every ``send_timeout_s``, or all of it (writing
resumes): a rate (1.1 KB/s at 60 s) any honest client passes, and a client dripping its reads
holds the connection only as long as the answer's size allows, not for ever. Else the
connection is dropped (an abort): the app's ``send()`` returns and its ``receive()`` gives
``http.disconnect``, as when a client goes. A timer is set as writing pauses, which only a
client slower than the app causes.

A connection the server closes while a request is still arriving (its head or body late,
answered 408; a head over the limit; an answer given before the body's end, on a connection not
kept alive, as a client saying ``Connection: close`` or an app refusing a body too large by its
``Content-Length``) is not closed at once: the kernel resets a connection closed with bytes
unread, or that bytes reach after, and a client still sending then sees a reset on its next
write, not the answer it was sent (Python's ``urllib``, which says ``Connection: close``,
posting a 5 MB batch: 20 times of 20, the 400 never read). As nginx's and Apache's lingering
close, the answer goes out, then the end of it (``write_eof``: a FIN), and what the client
still sends is read and dropped until it ends (its own FIN) or for ``linger_timeout_s`` at
most, and ``_LINGER_BYTES``, then the connection closes. An app still waiting for the body gets
``http.disconnect`` as the lingering begins (uvicorn tells it as the connection is lost, which
comes later now). A client that never stops sending holds its connection no longer than that;
idle and new connections, which nothing is arriving on, close at once.

One timer a connection keeps all of its waits on the client's requests, the keep-alive one too
(uvicorn set a timer for that after every answer and cancelled it at the next request's first
read), and a whole request's deadline beside its head's or body's. A wait is a deadline stored;
the timer never runs further ahead than the shortest timeout, so a new deadline never needs it
set again, and when it fires before the deadline it finds, it is set again for then: one timer
call every few seconds on a busy connection, none per request, and the protocol costs no more
than it did before it had timeouts (``bench.http_protocol``: README, ``HTTP_HEAD_TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
import fcntl
import sys
import termios
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Any

from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.config import Settings
from app.errors import PROBLEM_JSON, InvalidRequest, problem_document

# What a request line takes besides its method and URL: two spaces, "HTTP/1.1" and CRLF.
_REQUEST_LINE_REST = len(b"  HTTP/1.1\r\n")

# What the connection waits on the client for, as its timer reads it (an index of
# BoundedProtocol._timeouts).
_NOTHING = 0  # nothing: a request was received whole, and the app answers it
_IDLE = 1  # the next request, the last one answered (uvicorn's keep-alive timeout)
_FIRST = 2  # a new connection's first byte
_HEAD = 3  # the rest of a request's head, some of it received
_BODY = 4  # a request's body
_LINGER = 5  # nothing: the connection closes once the client stops sending (_close)

# Bytes of an answer a client must take every send timeout while writing is paused: the
# transport's high water mark (uvloop's and asyncio's), which writing pauses beyond.
_MIN_TAKEN = 64 * 1024
# The ioctl that tells the bytes a TCP socket's kernel buffer holds unacknowledged (Linux's
# SIOCOUTQ, the same number); elsewhere the transport's buffer alone is counted.
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None
# Most bytes a lingering connection reads and drops before it closes: a client told 400 at the
# head of a body twice the largest the API takes (a batch of 4,224 KB) still sends it whole.
_LINGER_BYTES = 8 * 1024 * 1024


class _CycleTransport:
    """The transport as uvicorn's request cycles (``RequestResponseCycle``) use it: they
    write to it, ask whether it closes (before they write ``100 Continue``), and close it.
    The transport's own ``write``; the protocol's ``is_closing`` and ``close``, for a
    connection that lingers (``BoundedProtocol._close``) closes, and takes no more writes."""

    __slots__ = ("close", "is_closing", "write")

    def __init__(
        self,
        write: Callable[[bytes], None],
        is_closing: Callable[[], bool],
        close: Callable[[], None],
    ) -> None:
        self.write = write
        self.is_closing = is_closing
        self.close = close


class _Flow(FlowControl):
    """uvicorn's flow control, which also knows since when the server holds a request up:
    reading paused (the app has yet to read 64 KiB of body received, or a pipelined request
    waits for the answer before it), or, as the protocol says, a client waits for ``100
    Continue``. Each ends as reading resumes, which uvicorn does as the app asks for the
    body (``receive()``, which sends the ``100 Continue`` first) and after each answer; then
    ``on_resume`` gets the loop time the hold began."""

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        on_resume: Callable[[float], None],
    ) -> None:
        super().__init__(transport)
        self.held_since: float | None = None
        self._loop = loop
        self._on_resume = on_resume

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()
            if self.held_since is None:
                self.held_since = self._loop.time()

    def resume_reading(self) -> None:
        if self.held_since is not None:
            held_since, self.held_since = self.held_since, None
            self._on_resume(held_since)
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The options that make uvicorn (``uvicorn.run``, ``uvicorn.Config``) serve with
    :class:`BoundedProtocol` and the bounds ``settings`` give. The timeouts travel bound to
    the protocol class, which uvicorn pickles for its worker processes, the head limit as
    uvicorn's own option."""
    return {
        "http": partial(
            BoundedProtocol,
            head_timeout_s=settings.http_head_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            request_timeout_s=settings.http_request_timeout_s,
            send_timeout_s=settings.http_send_timeout_s,
            linger_timeout_s=settings.http_linger_timeout_s,
        ),
        "h11_max_incomplete_event_size": settings.http_max_header_bytes,
    }


class BoundedProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        head_timeout_s: float,
        body_timeout_s: float,
        request_timeout_s: float,
        send_timeout_s: float,
        linger_timeout_s: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # As uvicorn's h11 protocol reads it.
        self._max_head = config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        # The bytes the head (or trailer section) being received may still take; None while
        # a body is received.
        self._head_left: int | None = self._max_head
        self._chunked = False  # in a chunked body, whose last chunk trailer fields may follow
        self.url = b""  # set as a request begins; a refusal can come before
        self._head_timeout = head_timeout_s
        self._body_timeout = body_timeout_s
        keep_alive = float(self.timeout_keep_alive)
        self._timeouts = (0.0, keep_alive, head_timeout_s, head_timeout_s, body_timeout_s)
        # The furthest ahead the timer is set.
        self._tick = min(*self._timeouts[1:], request_timeout_s)
        self._awaiting = _NOTHING
        self._deadline = 0.0  # loop time by which what is awaited must have come
        self._timer: asyncio.TimerHandle | None = None
        self._request_timeout = request_timeout_s
        # Loop time by which the request being received must have come whole, head and body.
        # Only a body's wait reads it: a head's own deadline comes first (not later than
        # the request's timeout, the settings see to it).
        self._request_deadline = 0.0
        self._head_to_request = request_timeout_s - head_timeout_s  # from a head's deadline
        self._send_timeout = send_timeout_s
        self._stall: asyncio.TimerHandle | None = None  # set while writing is paused
        self._unsent = 0  # what the client had yet to take as the stall timer last looked
        self._linger_timeout = linger_timeout_s
        self._linger_left = 0  # bytes a lingering connection may still drop

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = self._flow = _Flow(transport, self.loop, self._resumed)
        self._cycle_transport = _CycleTransport(transport.write, self._closing, self._close)
        self._await(_FIRST, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        # Timers would keep the protocol alive until they fired.
        self._stop_timer()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting < _FIRST:  # a request begins (or a pipelined one, below)
            self._await(_HEAD, self._head_timeout)
            self._request_deadline = self._deadline + self._head_to_request
        elif self._awaiting == _FIRST:  # within the time the connection had for its first
            self._awaiting = _HEAD
            self._request_deadline = self.loop.time() + self._request_timeout
        elif self._awaiting == _LINGER:
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self.transport.close()
            return
        while self._head_left is not None and len(data) > self._head_left:
            # The head must end within the bytes it has left: parse those alone first.
            left, self._head_left = self._head_left, 0
            if left:
                super().data_received(data[:left])
                if self._closing():  # a malformed request, answered 400
                    return
            if self._head_left == 0:  # the head did not end
                self._refuse()
                return
            data = data[left:]
        if self._head_left is not None:
            self._head_left -= len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._awaiting == _NOTHING:  # it follows the one before in the same read
            self._await(_HEAD, self._head_timeout)
            self._request_deadline = self._deadline + self._head_to_request

    def on_headers_complete(self) -> None:
        self._head_left = None
        self._await(_BODY, self._body_timeout)
        if self.expect_100_continue and self._flow.held_since is None:
            # The client waits for the app to ask for the body.
            self._flow.held_since = self.loop.time()
        super().on_headers_complete()
        if self.cycle is not None:  # the request's (none for a WebSocket's first)
            self.cycle.transport = self._cycle_transport  # type: ignore[assignment]

    def on_chunk_header(self) -> None:
        # A chunk's size line. Its data follows (on_body), or, after the last chunk's (size 0),
        # trailer fields, which httptools keeps as it keeps headers: as long as a head.
        self._chunked = True
        self._head_left = self._max_head

    def on_body(self, body: bytes) -> None:
        self._head_left = None
        self._deadline = self.loop.time() + self._body_timeout
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_left = self._max_head
        self._chunked = False
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self.pipeline:
            # Answered before its body had come: idle from now, as after an answer.
            self._await(_IDLE, self.timeout_keep_alive)
        else:
            self._awaiting = _NOTHING

    def on_response_complete(self) -> None:
        # uvicorn's, but for its keep-alive timer: the connection's own waits for the next
        # request, unless that request has begun.
        self.server_state.total_requests += 1
        if self._closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._awaiting == _NOTHING:
            self._await(_IDLE, self.timeout_keep_alive)

    def pause_writing(self) -> None:
        # The transport's buffer is full: the client takes the answer slower than the app
        # makes it, or not at all. The app's next send() waits until it drains.
        super().pause_writing()
        if self._stall is None:
            self._unsent = self._untaken()
            self._stall = self.loop.call_later(self._send_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        """Writing has been paused for the send timeout: if the client took at least
        ``_MIN_TAKEN`` bytes of the answer meanwhile, wait again; else drop the connection
        (abort: a close would wait for the buffer to drain, for ever). An app waiting in
        send() returns, and gets ``http.disconnect``, as when a client goes."""
        unsent = self._untaken()
        if unsent <= self._unsent - _MIN_TAKEN:
            self._unsent = unsent
            self._stall = self.loop.call_later(self._send_timeout, self._stalled)
            return
        self._stall = None
        self.logger.warning(
            "Connection dropped: the client took less than %d bytes of an answer in %g s.",
            _MIN_TAKEN,
            self._send_timeout,
        )
        self.transport.abort()

    def _untaken(self) -> int:
        """Bytes written the client has yet to take: the transport's buffer, and the
        kernel's (sent or not, unacknowledged; Linux's SIOCOUTQ). The transport's alone
        misleads: it drains into the kernel's in large steps, as the kernel finds room (a
        client reading 200 KB/s on loopback, the kernel holding 2.8 MB, left it unchanged
        for longer than 0.3 s)."""
        untaken = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if _OUTQ is not None and sock is not None:
            with suppress(OSError):  # not a TCP socket
                untaken += int.from_bytes(fcntl.ioctl(sock.fileno(), _OUTQ, bytes(4)), "little")
        return untaken

    def handle_websocket_upgrade(self) -> None:
        # The connection is the WebSocket protocol's from now, and its timeouts.
        self._stop_timer()
        super().handle_websocket_upgrade()

    def _await(self, what: int, timeout: float) -> None:
        """Wait on the client for ``what``, at most ``timeout`` seconds (not less than
        ``_tick``) from now."""
        self._awaiting = what
        self._deadline = self.loop.time() + timeout
        if self._timer is None:
            self._timer = self.loop.call_later(self._tick, self._on_timer)

    def _stop_timer(self) -> None:
        self._awaiting = _NOTHING
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        awaiting = self._awaiting
        if awaiting == _NOTHING or self.transport.is_closing():
            return
        now = self.loop.time()
        deadline = self._deadline
        whole = awaiting == _BODY and self._request_deadline < deadline
        if whole:
            deadline = self._request_deadline
        if now < deadline:
            self._timer = self.loop.call_at(min(deadline, now + self._tick), self._on_timer)
        elif self._flow.held_since is not None:
            # The server, not the client, holds the request up: its deadlines move on as the
            # hold ends (_resumed).
            self._timer = self.loop.call_at(now + self._tick, self._on_timer)
        else:
            self._late(awaiting, whole)

    def _resumed(self, held_since: float) -> None:
        """The server held the request up from ``held_since`` until now: none of that time
        is the client's."""
        held = self.loop.time() - held_since
        self._deadline += held
        self._request_deadline += held

    def _late(self, awaiting: int, whole: bool) -> None:
        """What the connection waited for (``whole``: the whole request) has not come in
        time: answer 408 if a request can still be answered, and close the connection."""
        cycle = self.cycle
        if awaiting < _HEAD:  # nothing asked: an idle connection, or a new one
            self.transport.close()
        elif awaiting == _HEAD and cycle is not None and not cycle.response_complete:
            # The app still answers the request before: that answer goes out, then the
            # connection closes (as on a shutdown).
            self._awaiting = _NOTHING
            cycle.keep_alive = False
        elif awaiting == _BODY and cycle.response_started:
            self._close()
        else:
            if awaiting == _HEAD:
                detail = f"a request's head must arrive within {self._head_timeout:g} s"
            elif whole:
                detail = f"a request must arrive whole within {self._request_timeout:g} s"
            else:
                detail = f"a request's body stopped arriving for {self._body_timeout:g} s"
            self._answer_and_close(408, "request-timeout", "Request Timeout", detail)

    def _refuse(self) -> None:
        """Answer 414 or 431 and close the connection (as uvicorn answers a malformed
        request: :meth:`send_400_response`); only close it when the app has begun to answer."""
        status, type_ = 431, "request-header-fields-too-large"
        title = "Request Header Fields Too Large"
        if self._chunked:
            detail = f"a request's trailer fields are at most {self._max_head} bytes"
        elif len(self.parser.get_method()) + len(self.url) + _REQUEST_LINE_REST > self._max_head:
            status, type_, title = 414, "uri-too-long", "URI Too Long"
            detail = f"a request line is at most {self._max_head} bytes"
        else:
            detail = f"a request's line and headers are at most {self._max_head} bytes"
        if self._chunked and self.cycle.response_started:
            self.logger.warning("Request refused (%d): %s.", status, detail)
            self._close()
            return
        self._answer_and_close(status, type_, title, detail)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what is not HTTP/1.1 (its parser failed; uvicorn logged it):
        a problem+json 400, as every other refusal, where uvicorn wrote text/plain, and the
        connection closed lingering, so a client still sending reads it rather than a reset.
        Only the close where the app has begun to answer the request whose chunks broke, or
        a pipelined request broke behind one it has yet to answer: a 400 there would be a
        second answer to the one request, or land inside or ahead of the answer due first."""
        cycle = self.cycle
        if self._awaiting == _BODY and not self.pipeline:  # the cycle is this request's
            answer = not cycle.response_started
        else:  # a new request's head: after the one before is answered
            answer = cycle is None or cycle.response_complete
        if not answer:
            self._close()
            return
        detail = "the request is not valid HTTP/1.1 (its request line, headers or chunks)"
        self._answer_and_close(400, InvalidRequest.type, InvalidRequest.title, detail, logged=True)

    def _answer_and_close(
        self, status: int, type_: str, title: str, detail: str, *, logged: bool = False
    ) -> None:
        """Answer ``status`` as problem+json and close the connection (lingering): the
        refusals of the connection's own bounds, and of a malformed request. ``logged``: the
        refusal was logged already."""
        if not logged:
            self.logger.warning("Request refused (%d): %s.", status, detail)
        body = problem_document(status, type_, title, detail)
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: " + PROBLEM_JSON.encode() + b"\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self._close()

    def _closing(self) -> bool:
        return self._awaiting == _LINGER or self.transport.is_closing()

    def _close(self) -> None:
        """Close the connection: at once if no request is arriving, else once the client
        stops sending, or at the linger's bounds (``linger_timeout_s``, ``_LINGER_BYTES``),
        what it sends meanwhile read and dropped, after the end of the answer (a FIN)."""
        if not _HEAD <= self._awaiting <= _BODY or not self.transport.can_write_eof():
            self.transport.close()
            return
        self._stop_timer()
        self._awaiting = _LINGER
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # An app waiting for the body's rest gets http.disconnect, which uvicorn gives as
            # the connection is lost, now behind the linger; what it answers is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write_eof()
        self._linger_left = _LINGER_BYTES
        self._flow.resume_reading()  # if the app had yet to read what came
        self._timer = self.loop.call_later(self._linger_timeout, self.transport.close)
