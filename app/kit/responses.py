"""JSON responses written straight from plain data, for the hot read endpoints; streams
with a time limit."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import anyio
import orjson
from fastapi import Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.kit.jsonvalues import uuid_text


def json_response(content: Any) -> Response:
    """``content`` (dicts, lists, UUIDs, datetimes) as JSON, byte for byte what the
    endpoint's pydantic response model would write (``Z`` for UTC, like pydantic), without
    validating our own columns again. The endpoint keeps ``response_model`` for the schema."""
    body = orjson.dumps(content, default=uuid_text, option=orjson.OPT_UTC_Z)
    return Response(body, media_type="application/json")


class TimedStreamingResponse(StreamingResponse):
    """A stream that ends within ``limit_s`` seconds of its start however slowly its client
    reads (a client that stops reading leaves the server waiting to send, with no timeout
    of its own). Cut short, its answer ends without its last chunk: the server closes the
    connection, and the client sees a truncated answer. Either way its body is closed, so
    what the body held (a transaction, a connection) is released then, not when the
    client lets go."""

    def __init__(self, content: AsyncGenerator[bytes], *, limit_s: float, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._body = content
        self._limit_s = limit_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with aclosing(self._body):
            with anyio.move_on_after(self._limit_s):
                await super().__call__(scope, receive, send)
