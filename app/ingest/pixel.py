"""The pixel API (``GET /v1/pixel/<type>?data=<base64 JSON>``) and the 1x1 GIF it answers.

As Segment documents it: the call travels in ``data`` as base64-encoded JSON (standard or
URL-safe alphabet, padding optional), or, unencoded, as query parameters with dotted
names for nested fields (``properties.subject=…``). The write key is ``writeKey`` in it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

import orjson

from app.errors import InvalidRequest, PayloadTooLarge
from app.ingest.body import loads
from app.ingest.schemas import MAX_EVENT_BYTES

# A transparent 1x1 GIF (42 bytes).
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = {
    "Cache-Control": "no-cache, no-store, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
_MAX_DATA = MAX_EVENT_BYTES * 4 // 3 + 4


def decode(query: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The call a pixel URL carries. Raises :class:`InvalidRequest` (or
    :class:`PayloadTooLarge`) for a missing, undecodable or oversized payload."""
    params = list(query)
    data = next((value for key, value in params if key == "data"), None)
    if data is None:
        return _from_params(params)
    if len(data) > _MAX_DATA:
        raise PayloadTooLarge(f"an event is at most {MAX_EVENT_BYTES // 1024} KB")
    try:
        text = data.strip().replace("-", "+").replace("_", "/").replace(" ", "+")
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("`data` is not base64") from None
    try:
        decoded = loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("`data` is not base64-encoded JSON") from None
    if not isinstance(decoded, dict):
        raise InvalidRequest("`data` must encode a JSON object")
    return decoded


def _from_params(params: list[tuple[str, str]]) -> dict[str, Any]:
    if not params:
        raise InvalidRequest("send the call as `data` (base64 JSON) or as query parameters")
    if sum(len(k) + len(v) for k, v in params) > MAX_EVENT_BYTES:
        raise PayloadTooLarge(f"an event is at most {MAX_EVENT_BYTES // 1024} KB")
    out: dict[str, Any] = {}
    for key, value in params:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InvalidRequest(f"query parameter {key!r} conflicts with {part!r}")
            node = child
        if isinstance(node.get(leaf), dict):
            raise InvalidRequest(f"query parameter {key!r} conflicts with a nested field")
        node[leaf] = value
    return out
