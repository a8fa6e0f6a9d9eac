"""Request examples for the OpenAPI document of the tracking API."""

from __future__ import annotations

from typing import Any

_CONTEXT = {"ip": "203.0.113.7", "userAgent": "Mozilla/5.0", "channel": "web"}

_CALLS: dict[str, dict[str, Any]] = {
    "track": {
        "userId": "ada",
        "event": "Product Viewed",
        "properties": {"sku": "P-1", "price": 30},
        "context": _CONTEXT,
        "timestamp": "2026-11-01T10:02:00Z",
        "messageId": "m-42",
    },
    "page": {"anonymousId": "b1c2", "name": "Home", "properties": {"path": "/"}},
    "screen": {"userId": "ada", "name": "Checkout", "context": {"channel": "mobile"}},
    "identify": {
        "userId": "ada",
        "anonymousId": "b1c2",
        "traits": {"email": "ada@example.com", "phone": "+39 333 123 4567", "name": "Ada"},
    },
    "group": {"userId": "ada", "groupId": "acme", "traits": {"name": "Acme"}},
    "alias": {"previousId": "b1c2", "userId": "ada"},
}


def _examples(call: str) -> dict[str, Any]:
    body = _CALLS[call]
    return {
        call: {"summary": f"A {call} call", "value": body},
        "with-write-key": {
            "summary": "Write key in the body (browsers' sendBeacon as text/plain)",
            "value": {"writeKey": "pw_…", **body},
        },
    }


CALL_EXAMPLES: dict[str, dict[str, Any]] = {call: _examples(call) for call in _CALLS}

BATCH_EXAMPLES: dict[str, Any] = {
    "batch": {
        "summary": "Two calls of one browser",
        "value": {
            "batch": [
                {"type": "page", "anonymousId": "b1c2", "name": "Home"},
                {"type": "track", "anonymousId": "b1c2", "event": "Added to Cart"},
            ],
            "sentAt": "2026-11-01T10:05:00Z",
            "context": {"library": {"name": "analytics.js"}},
        },
    }
}
