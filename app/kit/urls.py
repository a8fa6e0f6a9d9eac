"""Checking URLs that Percorso hands to others (redirects, its own public address)."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def absolute_http_url(url: str, what: str) -> SplitResult:
    """``url``'s parts, if it is an absolute http(s) URL with a host, no credentials and no
    spaces or control characters. Raises ``ValueError`` naming ``what``."""
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise ValueError(f"{what} may not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be absolute http:// or https://")
    if parts.username or parts.password:
        raise ValueError(f"{what} may not carry credentials")
    return parts
