"""Reading tracking-call bodies: size limits, gzip, JSON or text/plain (``sendBeacon``)."""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import orjson
from fastapi import Request

from app.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from app.kit.jsonvalues import INTEGERS

_ACCEPTED_TYPES = ("application/json", "text/plain", "application/x-json", "")


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON document (:func:`read_body`, then :func:`parse_json`)."""
    return parse_json(await read_body(request, limit))


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, gunzipped. Refuses bodies over ``limit`` bytes (compressed or
    not) without reading them whole, bodies of another media type, and empty ones."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _ACCEPTED_TYPES and not media.endswith("+json"):
        raise UnsupportedMediaType(f"send JSON as application/json or text/plain, not {media}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one copy at most
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        body = _gunzip(body, limit)
    elif encoding not in ("identity", ""):
        raise UnsupportedMediaType(f"content-encoding {encoding} is not supported; use gzip")
    if not body or body.isspace():
        raise InvalidRequest("the request body is empty")
    return body


def parse_json(body: bytes) -> Any:
    """The JSON document of ``body`` (:func:`loads`); never answers 500 for a client's
    bytes."""
    try:
        return loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the body is not valid JSON: {exc.msg} at position {exc.pos}"
        ) from None


def loads(data: bytes | memoryview) -> Any:
    """``orjson.loads``, lenient where Segment's and RudderStack's own clients would be:
    bytes that are not UTF-8 (a till writing Latin-1, a truncated character) become U+FFFD,
    as Go's ``encoding/json`` reads them, and a number beyond a double's range (``1e400``)
    is null, as JavaScript's ``JSON.parse`` then ``JSON.stringify`` leave it, rather than
    refusing the whole document. The API's batch envelopes skip over what they do not read,
    so the pipeline reads their calls the same way. Valid JSON costs nothing more: it is
    repaired only after it failed to parse. Raises ``orjson.JSONDecodeError``."""
    # The error's message and place, not the error: its traceback holds this frame, and so
    # (a cycle) the request's body until the collector next runs.
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        failed = exc.msg, exc.doc, exc.pos
    repaired = bytes(data).decode("utf-8", "replace")
    if repaired.encode() != data:
        try:
            return orjson.loads(repaired)
        except orjson.JSONDecodeError as exc:
            failed = exc.msg, exc.doc, exc.pos
    if failed[0].startswith(_BEYOND_DOUBLE):
        try:
            value = json.loads(
                repaired, parse_int=_int, parse_float=_float, parse_constant=_not_json
            )
            orjson.dumps(value)  # what else orjson refuses to read, it refuses to write
            return value
        except (ValueError, RecursionError, orjson.JSONEncodeError):  # JSONDecodeError too
            pass
    raise orjson.JSONDecodeError(*failed)


# What orjson says of a number beyond a double's range.
_BEYOND_DOUBLE = "number is infinity"


def _float(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


def _int(text: str) -> int | float | None:
    """An integer as orjson reads it: exact within 64 bits, otherwise a double."""
    if len(text) <= 20 and (number := int(text)) in INTEGERS:
        return number
    return _float(text)


def _not_json(text: str) -> None:
    raise ValueError(f"{text} is not JSON")


def _gunzip(data: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error:
        raise InvalidRequest("the body is not valid gzip") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise _too_large(limit)
    return out


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body exceeds {limit // 1024} KB")
