"""JSON responses written straight from plain data, for the hot read endpoints."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response

from app.kit.jsonvalues import uuid_text


def json_response(content: Any) -> Response:
    """``content`` (dicts, lists, UUIDs, datetimes) as JSON, byte for byte what the
    endpoint's pydantic response model would write (``Z`` for UTC, like pydantic), without
    validating our own columns again. The endpoint keeps ``response_model`` for the schema."""
    body = orjson.dumps(content, default=uuid_text, option=orjson.OPT_UTC_Z)
    return Response(body, media_type="application/json")
