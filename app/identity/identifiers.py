"""Extract identifiers from a Segment-style call and normalise them.

Pure and synchronous: the API runs this once per event, so it must stay cheap. Everything
here is deterministic for a given config; nothing touches the network or the database.

Guarantees of :func:`extract_identifiers`:

* every returned identifier went through :func:`normalise`, so it is trimmed, within the
  length limit, free of control characters, not a blocked value, and (for ``email`` and
  ``phone``) in canonical form;
* no ``(kind, value)`` pair appears twice;
* order is ``user_id, crm_id, email, phone, anonymous_id``, then custom kinds in the order
  they were found; within a kind, values keep the order of their sources;
* malformed input (wrong types, broken ``externalIds`` entries) ends up in ``rejected`` with
  a reason, never in an exception.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeGuard

import phonenumbers

from app.kit.memo import ConfigMemo
from app.touchpoint import Identifier

BUILTIN_KINDS: tuple[str, ...] = ("user_id", "crm_id", "email", "phone", "anonymous_id")
"""The built-in kinds, in the order :func:`extract_identifiers` returns them."""
_BUILTIN_RANK = {kind: rank for rank, kind in enumerate(BUILTIN_KINDS)}

MAX_VALUE_LENGTH = 255
MAX_KIND_LENGTH = 64
# An event is one person; a long externalIds list is a bug or an attack, and identity
# planning is quadratic in the number of identifiers.
MAX_EXTERNAL_IDS = 50
_MAX_RAW_SHOWN = 100

BLOCKED_VALUES: frozenset[str] = frozenset(
    {
        # What SDKs and templates emit when a variable is unset or mis-serialised.
        "",
        "null",
        "(null)",
        "<null>",
        "undefined",
        "none",
        "nil",
        "nan",
        "[object object]",
        "true",
        "false",
        # Placeholders people type into forms or that CRMs fill in.
        "-1",
        "anonymous",
        "guest",
        "unknown",
        "n/a",
        "#n/a",
    }
)
"""Values (after trim + casefold) that never identify anyone.

Strings made only of ``0``, ``-`` and spaces (``"0"``, ``"000"``, ``"---"``, the nil UUID)
are blocked as well, by :func:`is_blocked`, without being listed here.
"""

JUNK_EMAILS: frozenset[str] = frozenset(
    {
        "test@test.com",
        "example@example.com",
        "noemail@noemail.com",
        "noemail@email.com",
        "no@email.com",
        "email@email.com",
        "none@none.com",
    }
)
"""Addresses typed into forms to get past a required field; shared by many people."""

# Control characters and lone surrogates: Postgres rejects NUL in text, orjson rejects lone
# surrogates, and neither belongs in an id. Compiled once: this runs per identifier.
_FORBIDDEN_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_KIND_CHARS = re.compile("[a-z0-9_]+")
_KIND_SEPARATORS = str.maketrans({" ": "_", "-": "_", ".": "_"})
# camelCase spellings of built-in kinds that SDKs use in externalIds.
_KIND_ALIASES = {"userid": "user_id", "anonymousid": "anonymous_id", "crmid": "crm_id"}
_USER_COLLECTIONS = frozenset({"", "users", "user"})
_PLAIN_ENCODINGS = frozenset({"", "none"})
# Floats above this are not exact integers any more: an id sent as 1.2345678901234567e19
# has already lost digits, and guessing them would fuse strangers.
_MAX_EXACT_FLOAT = 2.0**53


class InvalidIdentifier(ValueError):
    """A raw value that cannot be used as an identifier; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IdentityConfig:
    """Deployment-specific identity settings.

    Construction fails (``ValueError``) on an unknown phone region, so a typo in the
    settings stops the service at start-up instead of rejecting every national number.
    """

    default_phone_region: str = "IT"
    # Compared after trim + casefold; stored that way, whatever the caller passed, with the
    # canonical form of each value that is an email address or a phone number of the
    # default region (so "02 1234 5678" blocks +390212345678, however an event spells it).
    extra_blocked_values: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        region = self.default_phone_region.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {self.default_phone_region!r}")
        blocked = {v.strip().casefold() for v in self.extra_blocked_values}
        blocked.update(_canonical_forms(self.extra_blocked_values, region))
        # Frozen dataclass: normalising the fields once here keeps the hot path simple.
        object.__setattr__(self, "default_phone_region", region)
        object.__setattr__(self, "extra_blocked_values", frozenset(blocked))


@dataclass(frozen=True)
class Rejected:
    """A candidate identifier that was not used, e.g. ``("phone", "12", "not a valid ...")``.

    ``raw`` is a short, display-only rendering of the input (long strings are cut, objects
    and arrays are not dumped).
    """

    kind: str
    raw: str
    reason: str


class Extracted(NamedTuple):  # a tuple: built once per ingested event, cheaply
    identifiers: list[Identifier]
    rejected: list[Rejected]


def is_blocked(value: str, config: IdentityConfig) -> bool:
    """Whether ``value`` is a placeholder that must never identify anyone.

    Case-insensitive and whitespace-insensitive at the ends. Covers :data:`BLOCKED_VALUES`,
    :data:`JUNK_EMAILS`, strings made only of zeros, dashes and spaces (including empty),
    and ``config.extra_blocked_values``.
    """
    folded = value.strip().casefold()
    return (
        not folded.strip("0- ")
        or folded in BLOCKED_VALUES
        or folded in JUNK_EMAILS
        or folded in config.extra_blocked_values
    )


def normalise(kind: str, raw: object, config: IdentityConfig) -> str:
    """The canonical value of ``raw`` as an identifier of ``kind``.

    * ``email``: trimmed, lower-cased, in Unicode NFC, one ``@``, a non-empty local part, a
      dotted domain, no whitespace. Deliberately not RFC 5322: the goal is catching junk,
      not validating.
    * ``phone``: E.164 (``+393331234567``). Numbers without ``+`` are read as national
      numbers of ``config.default_phone_region``; numbers ``phonenumbers`` considers
      invalid are refused.
    * any other kind: trimmed, case, internal spaces and Unicode form kept (an id is
      opaque: two spellings may be two ids).

    Integers (and floats that are exact whole numbers) become their decimal string; any
    other non-string is refused. Blocked values (as sent, and for ``email`` and ``phone``
    in canonical form too), values longer than :data:`MAX_VALUE_LENGTH` and values with
    control characters are refused.

    Raises :class:`InvalidIdentifier` with a human-readable reason.
    """
    text = _coerce(raw).strip()
    if is_blocked(text, config):
        raise InvalidIdentifier("blocked value")
    if len(text) > MAX_VALUE_LENGTH:
        raise InvalidIdentifier(f"longer than {MAX_VALUE_LENGTH} characters")
    if _FORBIDDEN_CHARS.search(text):
        raise InvalidIdentifier("contains control characters")
    if kind == "email":
        value = _normalise_email(text)
    elif kind == "phone":
        value = _normalise_phone(text, config.default_phone_region)
    else:
        return text
    # Another spelling of a blocked address or number is that address or number (checked
    # here, not in _normalise_phone, whose cache knows no config). Only the config's values
    # need it: the built-in ones are ASCII words, compared above whatever their case.
    if value in config.extra_blocked_values:
        raise InvalidIdentifier("blocked value")
    return value


def normalise_kind(raw: object) -> str:
    """The identifier kind for an ``externalIds`` ``type``: ``"Loyalty Card"`` → ``loyalty_card``.

    Trimmed, lower-cased, spaces, dashes and dots become ``_``; the result must be
    ``[a-z0-9_]{1,64}``. camelCase spellings of built-in kinds (``userId``) map to them.
    Raises :class:`InvalidIdentifier`.
    """
    if not isinstance(raw, str):
        raise InvalidIdentifier("external id type is not a string")
    kind = raw.strip().lower().translate(_KIND_SEPARATORS)
    if not kind:
        raise InvalidIdentifier("external id has no type")
    if len(kind) > MAX_KIND_LENGTH:
        raise InvalidIdentifier(f"external id type longer than {MAX_KIND_LENGTH} characters")
    if not _KIND_CHARS.fullmatch(kind):
        raise InvalidIdentifier("external id type may only use letters, digits, _ - . and space")
    return _KIND_ALIASES.get(kind, kind)


def extract_identifiers(
    *,
    type: str,
    user_id: object,
    anonymous_id: object,
    traits: Mapping[str, Any],
    context: Mapping[str, Any],
    config: IdentityConfig,
) -> Extracted:
    """All identifiers of one call, normalised, with the candidates that were refused.

    Sources: ``userId``; ``email``, ``phone`` and ``crm_id``/``crmId`` from the top-level
    ``traits`` (identify calls only: on group calls they describe the group) and from
    ``context.traits`` (every call). When a trait is present (not null) at the top level it
    wins over ``context.traits``, even if it turns out invalid: it is the newer statement.
    Then ``anonymousId``, then each ``context.externalIds`` entry (``{id, type,
    collection, encoding}``): its kind is :func:`normalise_kind` of ``type``, entries of a
    collection other than users are refused (an account id would fuse a whole company),
    and an ``encoding`` other than ``none`` gives a separate kind (``email_sha256``)
    because a hash is not an address. ``None`` values are absent, not rejected.
    """
    sources: list[Mapping[str, Any]] = []
    if type == "identify" and _is_mapping(traits):
        sources.append(traits)
    context_traits = context.get("traits")
    if _is_mapping(context_traits):
        sources.append(context_traits)
    candidates = (  # one per built-in kind, in BUILTIN_KINDS' order
        user_id,
        _first_trait(sources, ("crm_id", "crmId")),
        _first_trait(sources, ("email",)),
        _first_trait(sources, ("phone",)),
        anonymous_id,
    )
    external_ids = context.get("externalIds")
    # One person's calls name the same few ids again and again: without external ids, the
    # answer is remembered for candidates that are all text or absent. So a remembered key
    # matches only equal text: JSON's other values never equal a string (1 == True, but
    # neither is stored), and its lists and objects cannot be looked up at all.
    if external_ids is None:
        try:
            known = _EXTRACTED.answers(config).get(candidates)
        except TypeError:  # a list or an object among them
            known = None
        if known is not None:
            found, refused = known
            return Extracted(list(found), [Rejected(*r) for r in refused] if refused else [])
    extracted = _extract(candidates, external_ids, config)
    if external_ids is None and all(c is None or c.__class__ is str for c in candidates):
        _EXTRACTED.remember(
            candidates,
            (
                tuple(extracted.identifiers),
                tuple((r.kind, r.raw, r.reason) for r in extracted.rejected),
            ),
        )
    return extracted


def _extract(
    candidates: tuple[object, ...], external_ids: object, config: IdentityConfig
) -> Extracted:
    found: dict[tuple[str, str], None] = {}  # (kind, value) pairs, an ordered set
    rejected: list[Rejected] = []

    def add(kind: str, raw: object) -> None:
        if raw is None:
            return
        try:
            value = normalise(kind, raw, config)
        except InvalidIdentifier as exc:
            rejected.append(Rejected(kind, _describe(raw), exc.reason))
            return
        found[kind, value] = None

    for kind, raw in zip(BUILTIN_KINDS, candidates, strict=True):
        add(kind, raw)
    pairs: Iterable[tuple[str, str]] = found
    if external_ids is not None:
        _add_external_ids(external_ids, add, rejected)
        # Built-in kinds in their order, then custom kinds in the order they were found
        # (a stable sort); without external ids, they were found in that order.
        pairs = sorted(found, key=_kind_rank)
    identifiers = [_identifier(kind, value) for kind, value in pairs]
    return Extracted(identifiers, _unique(rejected) if rejected else [])


# Verdicts of _extract by candidates. Held as tuples of identifiers and text, which the
# garbage collector stops tracking once it has looked (a level of nesting per collection;
# msgspec never tracks an Identifier, whose fields are text): as objects, 60,000 entries
# added 120,000 to every full collection of the consumer, 52-60 ms against 9 ms.
_Remembered = tuple[tuple[Identifier, ...], tuple[tuple[str, str, str], ...]]
_EXTRACTED: ConfigMemo[tuple[object, ...], _Remembered] = ConfigMemo(limit=65_536)


# Identifiers are frozen, and one person's ids ride along on each of their events: sharing
# instances saves building (and validating) a model per identifier per event. Bounded.
@functools.lru_cache(maxsize=16384)
def _identifier(kind: str, value: str) -> Identifier:
    return Identifier(kind=kind, value=value)


def _kind_rank(pair: tuple[str, str]) -> int:
    return _BUILTIN_RANK.get(pair[0], len(BUILTIN_KINDS))


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    # The exact-type and None checks first: decoded JSON is a dict or absent, and
    # isinstance against the Mapping ABC is several times slower.
    return type(value) is dict or (value is not None and isinstance(value, Mapping))


def _add_external_ids(
    entries: object, add: Callable[[str, object], None], rejected: list[Rejected]
) -> None:
    if not isinstance(entries, list):
        rejected.append(Rejected("external_id", _describe(entries), "externalIds is not a list"))
        return
    if len(entries) > MAX_EXTERNAL_IDS:
        reason = f"more than {MAX_EXTERNAL_IDS} external ids; the rest were ignored"
        rejected.append(Rejected("external_id", f"{len(entries)} entries", reason))
    for entry in entries[:MAX_EXTERNAL_IDS]:
        if not isinstance(entry, Mapping):
            rejected.append(Rejected("external_id", _describe(entry), "not an object"))
            continue
        try:
            kind = normalise_kind(entry.get("type"))
        except InvalidIdentifier as exc:
            rejected.append(Rejected("external_id", _describe(entry.get("type")), exc.reason))
            continue
        collection = entry.get("collection")
        if collection is not None and str(collection).strip().lower() not in _USER_COLLECTIONS:
            reason = f"not a person's id (collection {_describe(collection)!r})"
            rejected.append(Rejected(kind, _describe(entry.get("id")), reason))
            continue
        encoding = entry.get("encoding")
        if encoding is not None and str(encoding).strip().lower() not in _PLAIN_ENCODINGS:
            try:
                kind = normalise_kind(f"{kind}_{encoding}")
            except InvalidIdentifier as exc:
                rejected.append(Rejected(kind, _describe(entry.get("id")), exc.reason))
                continue
        if entry.get("id") is None:
            rejected.append(Rejected(kind, "null", "external id has no id"))
            continue
        add(kind, entry["id"])


def _first_trait(sources: list[Mapping[str, Any]], keys: tuple[str, ...]) -> object:
    for source in sources:
        for key in keys:
            value = source.get(key)
            if value is not None:
                return value
    return None


def _coerce(raw: object) -> str:
    if isinstance(raw, str):
        return raw
    # bool before int: True is an int, and "True" is nobody's id.
    if isinstance(raw, bool):
        raise InvalidIdentifier("not a string or integer")
    if isinstance(raw, int):
        # str() of a huge int raises (and is slow); no id has that many digits anyway.
        if raw.bit_length() > 4 * MAX_VALUE_LENGTH:
            raise InvalidIdentifier(f"longer than {MAX_VALUE_LENGTH} characters")
        return str(raw)
    if isinstance(raw, float):
        return str(whole_number(raw))
    raise InvalidIdentifier("not a string or integer")


def whole_number(raw: float) -> int:
    """A number sent as a float (``7.0``) as the whole number it stands for; refused unless
    it is one, and small enough that the float holds it exactly (another id's digits
    otherwise: 9007199254740993.0 reads as 9007199254740992)."""
    if not math.isfinite(raw) or not raw.is_integer():
        raise InvalidIdentifier("not a whole number")
    if abs(raw) >= _MAX_EXACT_FLOAT:
        raise InvalidIdentifier("number too large to be exact")
    return int(raw)


def _normalise_email(text: str) -> str:
    # One address, one identity, however its accents were typed: "é" as one character (NFC)
    # or as "e" and a combining accent (NFD, as some systems produce it). NFC last, as
    # lower-casing can leave a string out of it ("İ" then a mark below).
    email = unicodedata.normalize("NFC", text.lower())
    local, at, domain = email.partition("@")
    if (
        not at
        or not local
        or "@" in domain
        or "." not in domain
        or domain.startswith(".")
        or domain.endswith(".")
        or ".." in domain
        or len(email.split()) != 1
    ):
        raise InvalidIdentifier("not a valid email address")
    return email


# Parsing is the slow part of extraction (tens of microseconds), and the same person's phone
# rides along on every event in context.traits, so repeats are the common case. Only
# successes are cached; the cache is bounded and keyed by region too.
@functools.lru_cache(maxsize=8192)
def _normalise_phone(text: str, region: str) -> str:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentifier("not a valid phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentifier("not a valid phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _canonical_forms(values: Iterable[str], region: str) -> set[str]:
    """What :func:`normalise` makes of each of ``values`` that is a valid email address or
    phone number (national numbers read as ``region``'s)."""
    forms = set()
    for value in values:
        text = value.strip()
        with contextlib.suppress(InvalidIdentifier):
            forms.add(_normalise_email(text))
        with contextlib.suppress(InvalidIdentifier):
            forms.add(_normalise_phone(text, region))
    return forms


def _describe(raw: object) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, str):
        text = raw
    elif isinstance(raw, bool):
        text = "true" if raw else "false"
    elif isinstance(raw, int) and raw.bit_length() > 4 * MAX_VALUE_LENGTH:
        text = f"<integer of {raw.bit_length()} bits>"
    elif isinstance(raw, int | float):
        text = repr(raw)
    elif isinstance(raw, Mapping):
        text = "<object>"  # never dump a whole object (PII, size) into a rejection
    elif isinstance(raw, list | tuple):
        text = "<array>"
    else:
        text = f"<{type(raw).__name__}>"
    return text if len(text) <= _MAX_RAW_SHOWN else text[:_MAX_RAW_SHOWN] + "…"


def _unique(rejected: list[Rejected]) -> list[Rejected]:
    return list(dict.fromkeys(rejected))
