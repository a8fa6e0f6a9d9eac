"""uvicorn's httptools protocol, with a limit on the size of a request's head.

httptools has none: a client could send one endless header line, and the server kept every
byte of it (it buffers a header until the header ends), then routed the request as any
other. :class:`HeadLimitedProtocol` answers a head (request line and header lines, to the
blank line that ends them) longer than the limit with 414 URI Too Long when the request line
alone is over it, else 431 Request Header Fields Too Large, and closes the connection, as
soon as the limit is passed, without waiting for the head to end. A chunked body's trailer
fields, which httptools buffers alike, are held to the same limit. The limit is uvicorn's
own for heads, ``h11_max_incomplete_event_size``, which only its h11 protocol applied.

A head is measured in the bytes received, not in the parser's callbacks (httptools hands
a header over only once it has buffered all of it): no work per header, a comparison and a
subtraction per read. The bytes of a read that follow the end of a request (a pipelined
request, sent before the answer to the one before: no browser or SDK does) or the size line
of a body's last chunk are not counted, so those may take up to the limit and a read (at
most 256 KiB) more.
"""

from __future__ import annotations

import asyncio
from typing import Any

from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.errors import PROBLEM_JSON, problem_document

# What a request line takes besides its method and URL: two spaces, "HTTP/1.1" and CRLF.
_REQUEST_LINE_REST = len(b"  HTTP/1.1\r\n")


class HeadLimitedProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # As uvicorn's h11 protocol reads it.
        self._max_head = config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        # The bytes the head (or trailer section) being received may still take; None while
        # a body is received.
        self._head_left: int | None = self._max_head
        self._chunked = False  # in a chunked body, whose last chunk trailer fields may follow
        self.url = b""  # set as a request begins; a refusal can come before

    def data_received(self, data: bytes) -> None:
        while self._head_left is not None and len(data) > self._head_left:
            # The head must end within the bytes it has left: parse those alone first.
            left, self._head_left = self._head_left, 0
            if left:
                super().data_received(data[:left])
                if self.transport.is_closing():  # a malformed request, answered 400
                    return
            if self._head_left == 0:  # the head did not end
                self._refuse()
                return
            data = data[left:]
        if self._head_left is not None:
            self._head_left -= len(data)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._head_left = None
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        # A chunk's size line. Its data follows (on_body), or, after the last chunk's (size 0),
        # trailer fields, which httptools keeps as it keeps headers: as long as a head.
        self._chunked = True
        self._head_left = self._max_head

    def on_body(self, body: bytes) -> None:
        self._head_left = None
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_left = self._max_head
        self._chunked = False

    def _refuse(self) -> None:
        """Answer 414 or 431 and close the connection (as uvicorn answers a malformed
        request: ``send_400_response``); only close it when the app has begun to answer."""
        status, type_ = 431, "request-header-fields-too-large"
        title = "Request Header Fields Too Large"
        if self._chunked:
            detail = f"a request's trailer fields are at most {self._max_head} bytes"
        elif len(self.parser.get_method()) + len(self.url) + _REQUEST_LINE_REST > self._max_head:
            status, type_, title = 414, "uri-too-long", "URI Too Long"
            detail = f"a request line is at most {self._max_head} bytes"
        else:
            detail = f"a request's line and headers are at most {self._max_head} bytes"
        self.logger.warning("Request refused (%d): %s.", status, detail)
        if self._chunked and self.cycle.response_started:
            self.transport.close()
            return
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
        self.transport.close()
