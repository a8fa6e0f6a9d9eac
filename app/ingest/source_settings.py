"""Per-source tracking settings, stored in ``sources.settings`` (JSONB).

* ``allowed_origins``: browser origins allowed to send with this source's write key, e.g.
  ``["https://shop.example"]``; absent or ``["*"]`` allows any origin (Segment's default).
  A non-ASCII domain is kept in punycode, the form browsers send.
  Only requests that carry an ``Origin`` header (browsers) are checked.
* ``rate_limit_per_s``: events per second this source may send to one API replica,
  overriding the ``PERCORSO_INGEST_RATE_LIMIT_PER_S`` default.

Unknown keys are kept and ignored, so other features can store their own settings.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import idna
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ANY_ORIGIN = "*"


class SourceSettings(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    allowed_origins: list[str] | None = Field(default=None, max_length=100)
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=1_000_000)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [normalise_origin(origin) for origin in value]

    def allows_origin(self, origin: str) -> bool:
        if not self.allowed_origins or ANY_ORIGIN in self.allowed_origins:
            return True
        try:
            return normalise_origin(origin) in self.allowed_origins
        except ValueError:
            return False


def normalise_origin(origin: str) -> str:
    """``"https://Shop.Example:443/"`` → ``"https://shop.example"``; ``*`` stays ``*``.
    Raises ``ValueError`` for anything that is not a bare http(s) origin."""
    text = origin.strip()
    if text == ANY_ORIGIN:
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{origin!r} is not an origin like https://shop.example")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{origin!r} is not a bare origin (no path, query or credentials)")
    default_port = 443 if parts.scheme == "https" else 80
    port = "" if parts.port in (None, default_port) else f":{parts.port}"
    # An IPv6 address keeps its brackets (urlsplit's hostname drops them): without, the
    # origin read back is none, and settings that do not read fall back to the defaults.
    host = f"[{parts.hostname}]" if ":" in parts.hostname else _ascii_host(parts.hostname)
    return f"{parts.scheme}://{host}{port}"


def _ascii_host(host: str) -> str:
    """A domain name as browsers send it in ``Origin``: a non-ASCII one in punycode
    (``bücher.example`` → ``xn--bcher-kva.example``, by UTS #46 as browsers map it)."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode()
    except idna.IDNAError as exc:
        raise ValueError(f"{host!r} is not a valid domain name: {exc}") from None


def parse(settings: dict[str, Any] | None) -> SourceSettings:
    """The settings of a stored source. Invalid stored values fall back to defaults rather
    than failing every request of the source."""
    try:
        return SourceSettings.model_validate(settings or {})
    except ValidationError:
        return SourceSettings()


def validate(settings: dict[str, Any]) -> dict[str, Any]:
    """Validated settings as they should be stored; raises ``ValueError`` with a readable
    message (for ``percorso sources create`` and other admin paths)."""
    try:
        model = SourceSettings.model_validate(settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{field}: {first['msg']}") from None
    return model.model_dump(exclude_none=True)
