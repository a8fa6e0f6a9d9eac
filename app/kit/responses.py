"""JSON responses written straight from plain data, for the hot read endpoints."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi import Response


def json_response(content: Any) -> Response:
    """``content`` (dicts, lists, UUIDs, datetimes) as JSON, byte for byte what the
    endpoint's pydantic response model would write (``Z`` for UTC, like pydantic), without
    validating our own columns again. The endpoint keeps ``response_model`` for the schema."""
    body = orjson.dumps(content, default=_uuid_text, option=orjson.OPT_UTC_Z)
    return Response(body, media_type="application/json")


def _uuid_text(value: Any) -> str:
    # asyncpg returns its own UUID subclass, which orjson does not serialise natively.
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
