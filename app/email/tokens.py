"""Email tracking tokens: compact, URL-safe, versioned, HMAC-signed per source.

Layout (then base64url without padding)::

    version (1 byte) | source id (16 bytes) | payload (JSON) | tag (16 bytes)

``tag`` is HMAC-SHA256 of everything before it under the source's key (see
:mod:`app.email.keys`), truncated to 128 bits. The payload holds the recipient
identifier (``k`` kind, ``v`` value), campaign ``c``, destination URL ``u`` (click links
only), issue time ``i`` and optional send time ``s`` (Unix seconds).

Guarantees of :meth:`TokenSigner.verify`: the tag is checked in constant time before the
payload is parsed; any change to any byte, a token of another source's key, an unknown
version, or a malformed payload is :class:`InvalidToken`; a verified click token's URL is
an absolute http(s) URL, exactly the one that was signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from app.email.keys import source_key
from app.errors import InvalidRequest
from app.kit.urls import absolute_http_url

VERSION = 1
TAG_BYTES = 16
MAX_TOKEN_CHARS = 4096
MAX_URL = 2048
MAX_CAMPAIGN = 200
_HEADER = 1 + 16


class InvalidToken(InvalidRequest):
    type, title = "invalid-email-token", "The email tracking token is not valid"


@dataclass(frozen=True, slots=True)
class EmailToken:
    source_id: uuid.UUID
    kind: str
    value: str
    campaign: str | None
    url: str | None
    issued_at: datetime
    sent_at: datetime | None = None


class TokenSigner:
    """Mints tokens with keys derived from one server secret; verifies them with it or with
    a previous one (a rotated secret's tokens, already sent, keep working)."""

    def __init__(self, secret: bytes, previous: tuple[bytes, ...] = ()) -> None:
        self._secret = secret
        self._secrets = (secret, *previous)

    def mint(self, token: EmailToken) -> str:
        """The token string. Raises ``ValueError`` for a URL that is not absolute http(s)
        or fields over their limits (mint-time checks, so a bad link is never sent)."""
        if token.url is not None:
            check_url(token.url)
        if token.campaign is not None and len(token.campaign) > MAX_CAMPAIGN:
            raise ValueError(f"a campaign name is at most {MAX_CAMPAIGN} characters")
        payload: dict[str, Any] = {
            "k": token.kind,
            "v": token.value,
            "i": int(token.issued_at.timestamp()),
        }
        if token.campaign is not None:
            payload["c"] = token.campaign
        if token.url is not None:
            payload["u"] = token.url
        if token.sent_at is not None:
            payload["s"] = int(token.sent_at.timestamp())
        body = bytes([VERSION]) + token.source_id.bytes + orjson.dumps(payload)
        text = _b64encode(body + _tag(self._secret, token.source_id, body))
        if len(text) > MAX_TOKEN_CHARS:
            raise ValueError("the token would be too long; shorten the URL or campaign")
        return text

    def verify(self, text: str | None) -> EmailToken:
        if not text:
            raise InvalidToken("the link has no tracking token (`d`)")
        if len(text) > MAX_TOKEN_CHARS:
            raise InvalidToken("the tracking token is too long")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise InvalidToken("the tracking token is not base64url") from None
        if len(raw) < _HEADER + TAG_BYTES + 2 or raw[0] != VERSION:
            raise InvalidToken("the tracking token is malformed or of an unknown version")
        body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        source_id = uuid.UUID(bytes=body[1:_HEADER])
        if not any(
            hmac.compare_digest(tag, _tag(secret, source_id, body)) for secret in self._secrets
        ):
            raise InvalidToken("the tracking token's signature does not match")
        return _parse(source_id, body[_HEADER:])


def _tag(secret: bytes, source_id: uuid.UUID, body: bytes) -> bytes:
    key = source_key(secret, source_id)
    return hmac.new(key, body, hashlib.sha256).digest()[:TAG_BYTES]


def _parse(source_id: uuid.UUID, payload: bytes) -> EmailToken:
    # Signed by us, so a failure here means a bug or a rotated format, not an attack;
    # still a 400, never a 500.
    try:
        data = orjson.loads(payload)
        kind, value, issued = data["k"], data["v"], data["i"]
        campaign, url, sent = data.get("c"), data.get("u"), data.get("s")
        if not (isinstance(kind, str) and isinstance(value, str) and isinstance(issued, int)):
            raise TypeError
        if url is not None:
            check_url(url)
        return EmailToken(
            source_id=source_id,
            kind=kind,
            value=value,
            campaign=campaign if isinstance(campaign, str) else None,
            url=url,
            issued_at=datetime.fromtimestamp(issued, UTC),
            sent_at=datetime.fromtimestamp(sent, UTC) if isinstance(sent, int) else None,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
        raise InvalidToken("the tracking token's payload is malformed") from None


def check_url(url: object) -> str:
    """An absolute http(s) URL with a host, no credentials, no control characters.
    Raises ``ValueError``."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise ValueError(f"a destination URL is 1 to {MAX_URL} characters")
    absolute_http_url(url, "a destination URL")
    return url


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
