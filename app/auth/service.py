"""Sources, tokens, and checking the credentials that requests present.

Guarantees: secrets are only compared by hash; a verified credential is cached for
``auth_cache_ttl_s`` seconds, so a revoked key stops working within that time. A lookup
that fails (the database unavailable) raises and caches nothing, so a key works as soon as
the database does again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import keys, repository
from app.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from app.ingest import source_settings
from app.models import CHANNELS, TOKEN_SCOPES, ApiToken, Source
from app.touchpoint import new_event_id

_CACHE_MAX = 10_000
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """A source as requests see it. ``policy`` is its ``settings`` read once, when the
    source is built (and so once per load into the :class:`Authenticator`'s cache), for the
    checks every tracking request makes."""

    id: Any
    name: str
    channel: str
    settings: dict[str, Any]
    policy: source_settings.SourcePolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", source_settings.parse(self.settings))


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: Any
    scope: str

    def allows(self, scope: str) -> bool:
        return self.scope == scope or self.scope == "admin"


async def create_source(
    session: AsyncSession,
    *,
    name: str,
    channel: str,
    settings: dict[str, Any] | None = None,
    write_key: str | None = None,
) -> tuple[SourceInfo, str]:
    """Create a source and return it with its write key (shown once, stored hashed)."""
    if channel not in CHANNELS:
        raise InvalidRequest(f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}")
    if not name.strip() or len(name) > 200:
        raise InvalidRequest("a source name is 1 to 200 characters")
    if await repository.get_source_by_name(session, name):
        raise InvalidRequest(f"a source named {name!r} already exists")
    settings = _validated(settings or {})
    secret = write_key or keys.generate(keys.WRITE_KEY_PREFIX)
    source = await repository.add_source(
        session,
        id=new_event_id(),
        name=name,
        channel=channel,
        key_hash=keys.digest(secret),
        key_prefix=keys.display_prefix(secret),
        settings=settings or {},
    )
    return SourceInfo(source.id, source.name, source.channel, source.settings), secret


def _validated(settings: dict[str, Any]) -> dict[str, Any]:
    try:
        return source_settings.validate(settings)
    except ValueError as exc:
        raise InvalidRequest(f"invalid source settings: {exc}") from None


class Keep(Enum):
    """A setting :func:`set_source_settings` leaves as it is stored."""

    KEEP = auto()


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class SettingsChanged:
    """A source after :func:`set_source_settings`: its row, its settings as requests read
    them, and why each stored field left untouched that still does not read does not."""

    source: Source
    policy: source_settings.SourcePolicy
    still_invalid: dict[str, str]


async def set_source_settings(
    session: AsyncSession,
    name: str,
    *,
    allowed_origins: list[str] | Keep | None = KEEP,
    rate_limit_per_s: float | Keep | None = KEEP,
) -> SettingsChanged:
    """Set source ``name``'s tracking settings in place: ``allowed_origins`` (the new list;
    ``None`` for any origin) and ``rate_limit_per_s`` (``None`` for the process's default),
    each left as stored when :data:`KEEP`. Values are validated as :func:`create_source`
    validates them; every other stored key is kept, and a field set replaces a stored value
    that no longer reads. Disabled sources stay disabled. One UPDATE, so a key another
    writer stores meanwhile is kept too.

    Settings stored as something other than a JSON object can only be replaced with the
    allowed origins set too: until then no browser may send, and keeping only a new rate
    would silently allow every origin."""
    fields: dict[str, object] = {
        "allowed_origins": allowed_origins,
        "rate_limit_per_s": rate_limit_per_s,
    }
    if all(value is KEEP for value in fields.values()):
        raise InvalidRequest("nothing to set: give the allowed origins or the rate limit")
    patch = {f: v for f, v in fields.items() if v is not KEEP and v is not None}
    source = await repository.update_source_settings(
        session,
        name,
        patch=_validated(patch),
        remove=[f for f, v in fields.items() if v is None],
        replace_non_object=allowed_origins is not KEEP,
    )
    if source is None:
        await _source_named(session, name)  # NotFound for an unknown name
        raise InvalidRequest(
            f"source {name!r}'s stored settings are not a JSON object, so no browser may send"
            " with its write key: set its allowed origins too, to replace them"
        )
    policy = source_settings.parse(source.settings)
    untouched = {f for f, v in fields.items() if v is KEEP}
    return SettingsChanged(source, policy, policy.reasons(untouched))


async def create_token(
    session: AsyncSession, *, scope: str, name: str = "", secret: str | None = None
) -> tuple[TokenInfo, str]:
    """Create an API token and return it with its secret (shown once, stored hashed)."""
    if scope not in TOKEN_SCOPES:
        raise InvalidRequest(f"unknown scope {scope!r}; one of {', '.join(TOKEN_SCOPES)}")
    prefix = keys.ADMIN_TOKEN_PREFIX if scope == "admin" else keys.READ_TOKEN_PREFIX
    secret = secret or keys.generate(prefix)
    token = await repository.add_token(
        session,
        id=new_event_id(),
        name=name or f"{scope} token",
        scope=scope,
        token_hash=keys.digest(secret),
        prefix=keys.display_prefix(secret),
    )
    return TokenInfo(token.id, token.scope), secret


class Authenticator:
    """Resolves presented secrets to sources and tokens, with a short TTL cache."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], ttl_s: float) -> None:
        self._sessions = session_factory
        self._ttl = ttl_s
        self._sources: dict[str, tuple[float, SourceInfo | None]] = {}
        self._tokens: dict[str, tuple[float, TokenInfo | None]] = {}

    async def source(self, write_key: str | None) -> SourceInfo:
        if not write_key:
            raise Unauthorized(
                "send the source's write key as the HTTP Basic user name",
                headers={"WWW-Authenticate": 'Basic realm="percorso"'},
            )
        found = await self._lookup_source(keys.digest(write_key))
        if found is None:
            raise Unauthorized(
                "the write key is not valid", headers={"WWW-Authenticate": 'Basic realm="percorso"'}
            )
        return found

    async def source_by_id(self, source_id: uuid.UUID) -> SourceInfo | None:
        """An enabled source by id (email tokens name their source), cached like keys."""
        return await self._cached(self._sources, f"id:{source_id}", _source_by_id(source_id))

    async def token(self, secret: str | None, scope: str) -> TokenInfo:
        challenge = {"WWW-Authenticate": 'Bearer realm="percorso"'}
        if not secret:
            raise Unauthorized(
                "send an API token as 'Authorization: Bearer <token>'", headers=challenge
            )
        digest = keys.digest(secret)
        token = await self._lookup_token(digest)
        if token is None:
            if await self._lookup_source(digest) is not None:
                raise Forbidden("a write key can only send events; use an API token here")
            raise Unauthorized("the token is not valid", headers=challenge)
        if not token.allows(scope):
            raise Forbidden(f"this token's scope ({token.scope}) does not allow {scope}")
        return token

    async def _lookup_source(self, digest: str) -> SourceInfo | None:
        return await self._cached(self._sources, digest, _source_by_key(digest))

    async def _lookup_token(self, digest: str) -> TokenInfo | None:
        return await self._cached(self._tokens, digest, _token_by_hash(digest))

    async def _cached(
        self,
        cache: dict[str, tuple[float, T | None]],
        key: str,
        load: Callable[[AsyncSession], Awaitable[T | None]],
    ) -> T | None:
        hit = cache.get(key)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        async with self._sessions() as session:
            value = await load(session)
        if len(cache) >= _CACHE_MAX:
            _make_room(cache, now)
        cache[key] = (now + self._ttl, value)
        return value


def _make_room(cache: dict[str, tuple[float, T | None]], now: float) -> None:
    """Bound a full cache: a flood of random keys must not grow memory without limit, nor
    evict the credentials in use (each would cost a lookup again). Expired entries and
    unknown keys go; what is known stays, unless it alone nearly fills the cache (then
    everything goes, so that making room stays rare)."""
    for key in [k for k, (until, value) in cache.items() if value is None or until <= now]:
        del cache[key]
    if len(cache) >= _CACHE_MAX * 9 // 10:
        cache.clear()


def _source_info(row: Any) -> SourceInfo | None:
    if row is None:
        return None
    info = SourceInfo(row.id, row.name, row.channel, row.settings)
    if info.policy.invalid:
        # Once per load into the cache; the source's id, never its key. The stored values
        # are quoted shortened, so the operator can find what to fix.
        log.warning(
            "source %s has stored settings that do not read, held to the safe side until"
            " they are fixed with `percorso sources set` (an invalid allowed_origins refuses"
            " every browser, an invalid rate_limit_per_s gives the default rate): %s",
            info.id,
            "; ".join(info.policy.invalid),
        )
    return info


def _source_by_id(source_id: uuid.UUID) -> Callable[[AsyncSession], Awaitable[SourceInfo | None]]:
    async def load(session: AsyncSession) -> SourceInfo | None:
        return _source_info(await repository.get_source_by_id(session, source_id))

    return load


def _source_by_key(digest: str) -> Callable[[AsyncSession], Awaitable[SourceInfo | None]]:
    async def load(session: AsyncSession) -> SourceInfo | None:
        return _source_info(await repository.get_source_by_key_hash(session, digest))

    return load


def _token_by_hash(digest: str) -> Callable[[AsyncSession], Awaitable[TokenInfo | None]]:
    async def load(session: AsyncSession) -> TokenInfo | None:
        row = await repository.get_token_by_hash(session, digest)
        return TokenInfo(row.id, row.scope) if row else None

    return load


async def enabled_source(session: AsyncSession, name: str) -> SourceInfo:
    """The enabled source called ``name``; InvalidRequest otherwise (for command-line tools)."""
    row = await repository.get_source_by_name(session, name)
    if row is None or row.disabled_at is not None:
        raise InvalidRequest(f"no enabled source named {name!r}")
    return SourceInfo(row.id, row.name, row.channel, row.settings)


async def list_sources(session: AsyncSession) -> Sequence[Source]:
    """Every source, by name, disabled ones too."""
    return await repository.list_sources(session)


async def set_source_disabled(session: AsyncSession, name: str, disabled: bool) -> Source:
    """Disable source ``name`` (its write key stops working, its email links record nothing),
    or enable it again. Idempotent: a source already so is left as it is, ``disabled_at``
    kept."""
    source = await _source_named(session, name)
    if (source.disabled_at is not None) != disabled:
        await repository.set_source_disabled(session, source, disabled)
    return source


async def rotate_source_key(session: AsyncSession, *, name: str) -> tuple[Source, str]:
    """Give source ``name`` a new write key and return the source with it (shown once,
    stored hashed); the old key stops working. The source keeps its id, so its events stay
    attributed to it, and stays disabled if it is."""
    source = await _source_named(session, name)
    return source, await _new_key(session, source, None)


async def ensure_source_key(
    session: AsyncSession, *, name: str, channel: str, write_key: str | None = None
) -> str:
    """A new write key (``write_key``, or a generated one) for source ``name``, created if
    missing: ``percorso dev``'s demo source."""
    source = await repository.get_source_by_name(session, name)
    if source is None:
        _, secret = await create_source(session, name=name, channel=channel, write_key=write_key)
        return secret
    return await _new_key(session, source, write_key)


async def _source_named(session: AsyncSession, name: str) -> Source:
    source = await repository.get_source_by_name(session, name)
    if source is None:
        raise NotFound(f"no source named {name!r}")
    return source


async def _new_key(session: AsyncSession, source: Source, write_key: str | None) -> str:
    secret = write_key or keys.generate(keys.WRITE_KEY_PREFIX)
    await repository.set_source_key(
        session, source, keys.digest(secret), keys.display_prefix(secret)
    )
    return secret


async def list_tokens(session: AsyncSession) -> Sequence[ApiToken]:
    """Every API token, oldest first, revoked ones too."""
    return await repository.list_tokens(session)


async def revoke_token(session: AsyncSession, token: str) -> ApiToken:
    """Revoke the one token not yet revoked that ``token`` names: by its name, its display
    prefix (``pr_AbCd``) or its id. Names need not be unique, nor prefixes: when several
    tokens match, none is revoked and the error lists them with their ids."""
    try:
        token_id: uuid.UUID | None = uuid.UUID(token)
    except ValueError:
        token_id = None
    found = await repository.find_unrevoked_tokens(session, token, token_id)
    if not found:
        raise NotFound(f"no token that is not revoked has the name, prefix or id {token!r}")
    if len(found) > 1:
        listed = ", ".join(f"{t.id} ({t.token_prefix}…, {t.name!r})" for t in found)
        raise InvalidRequest(f"{len(found)} tokens match {token!r}: {listed}; revoke one by its id")
    await repository.revoke_token(session, found[0])
    return found[0]


async def replace_token(
    session: AsyncSession, *, name: str, scope: str, secret: str | None = None
) -> tuple[TokenInfo, str]:
    """Revoke the tokens called ``name`` and issue a new one."""
    await repository.delete_tokens_named(session, name)
    return await create_token(session, scope=scope, name=name, secret=secret)
