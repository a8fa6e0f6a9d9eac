"""Per-source tracking settings, stored in ``sources.settings`` (JSONB).

* ``allowed_origins``: browser origins allowed to send with this source's write key, e.g.
  ``["https://shop.example"]``; absent, empty or ``["*"]`` allows any origin (Segment's default).
  A non-ASCII domain is kept in punycode, the form browsers send.
  Only requests that carry an ``Origin`` header (browsers) are checked.
* ``rate_limit_per_s``: events per second this source may send to one API replica,
  overriding the ``PERCORSO_INGEST_RATE_LIMIT_PER_S`` default.

Unknown keys are kept and ignored, so other features can store their own settings.

Settings are checked when written (:func:`validate`, by ``percorso sources create`` and
``set``), but what is stored can still fail to read back: an operator edits the JSONB by
hand, or a later release tightens a rule. Reading (:func:`parse`) then fails closed, field
by field, never open: a field that reads keeps working; an ``allowed_origins`` that does not
read refuses every request with an ``Origin`` (browsers), while requests without one
(servers) go through; a ``rate_limit_per_s`` that does not read gives the source the
process's default rate. :class:`SourcePolicy` says which fields did not read, for the
warning its reader logs.

:func:`parse` runs pydantic validation, a few microseconds per origin: it is meant to run once
per source loaded (``SourceInfo`` carries the result, cached with the credential), not once
per request.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class SourcePolicy:
    """What a source's tracking requests are held to, read once from its stored settings.

    ``allowed_origins`` is ``None`` when any origin may send; ``origins_invalid`` is true
    when the stored ``allowed_origins`` did not read, and then no origin may.
    ``rate_limit_per_s`` is ``None`` for the process's default rate. ``invalid`` holds a
    line per stored field that did not read (``"allowed_origins: …"``), for the log only:
    it quotes stored values, shortened."""

    allowed_origins: frozenset[str] | None = None
    origins_invalid: bool = False
    rate_limit_per_s: float | None = None
    invalid: tuple[str, ...] = ()

    def allows_origin(self, origin: str) -> bool:
        """Whether a browser at ``origin`` (the ``Origin`` header as sent) may send."""
        return not self.origins_invalid and _allows(self.allowed_origins, origin)

    def reasons(self, fields: Collection[str]) -> dict[str, str]:
        """Why each of ``fields`` did not read, for those of them that did not."""
        pairs = (line.split(": ", 1) for line in self.invalid)
        return {field: reason for field, reason in pairs if field in fields}


DEFAULT_POLICY = SourcePolicy()
_REASON_CHARS = 200


def _origin_set(origins: list[str] | None) -> frozenset[str] | None:
    if not origins or ANY_ORIGIN in origins:
        return None
    return frozenset(origins)


def _allows(allowed: frozenset[str] | None, origin: str) -> bool:
    # Browsers send origins in the normalised form (lower case, no default port, punycode),
    # and normalising is idempotent: an exact match needs no parsing.
    if allowed is None or origin in allowed:
        return True
    try:
        return normalise_origin(origin) in allowed
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
    # origin stored would not read back as one, and the source would refuse every browser.
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


def parse(settings: object) -> SourcePolicy:
    """The policy of a source whose stored settings are ``settings``; never raises.

    Fails closed, field by field: a field that reads is in force whatever the others hold.
    An ``allowed_origins`` that does not read (or settings that are no JSON object) allows
    no origin: the list was there to keep other sites from using the key, and reading it as
    "any origin" would open the source to every site on the web without anyone noticing.
    A ``rate_limit_per_s`` that does not read gives the default rate
    (``PERCORSO_INGEST_RATE_LIMIT_PER_S``) rather than refusing the source's events: a rate
    limit protects capacity, not access, and the default is the rate the operator chose for
    every source without one of its own, so the replica is no worse off than with any such
    source, while refusing (or a rate of nothing) would drop the events of servers and apps
    over a typo. A source meant to be held below the default gets the default until the
    setting is fixed; the warning logged when the source is loaded says so."""
    if settings is None:
        return DEFAULT_POLICY
    if not isinstance(settings, dict):
        # ``[]``, ``""`` or ``0`` too: whatever was meant, it is not "no settings".
        return SourcePolicy(origins_invalid=True, invalid=("settings: not a JSON object",))
    if not settings:
        return DEFAULT_POLICY
    try:
        model = SourceSettings.model_validate(settings)
    except ValidationError:
        return _parse_field_by_field(settings)
    return SourcePolicy(
        allowed_origins=_origin_set(model.allowed_origins), rate_limit_per_s=model.rate_limit_per_s
    )


def _parse_field_by_field(settings: dict[str, Any]) -> SourcePolicy:
    values: dict[str, Any] = {}
    invalid: list[str] = []
    for field in SourceSettings.model_fields:
        if field not in settings:
            continue
        try:
            values[field] = getattr(SourceSettings.model_validate({field: settings[field]}), field)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            if len(reason) > _REASON_CHARS:
                reason = reason[:_REASON_CHARS] + "…"
            invalid.append(f"{field}: {reason}")
    return SourcePolicy(
        allowed_origins=_origin_set(values.get("allowed_origins")),
        origins_invalid="allowed_origins" in settings and "allowed_origins" not in values,
        rate_limit_per_s=values.get("rate_limit_per_s"),
        invalid=tuple(invalid),
    )


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
