"""The API's credential cache (app.auth.service.Authenticator) stays bounded under a flood
of unknown keys without evicting the credentials in use."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth import repository
from app.auth import service as auth_service
from app.auth.service import Authenticator
from app.db import create_session_factory
from app.errors import Unauthorized

LIMIT = 50


async def test_a_flood_of_unknown_keys_keeps_the_cache_bounded_and_the_known_key_cached(
    db: AsyncEngine, write_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_service, "_CACHE_MAX", LIMIT)
    lookups: list[str] = []
    lookup = repository.get_source_by_key_hash

    async def counted(session: object, digest: str) -> object:
        lookups.append(digest)
        return await lookup(session, digest)  # type: ignore[arg-type]

    monkeypatch.setattr(repository, "get_source_by_key_hash", counted)
    authenticator = Authenticator(create_session_factory(db), ttl_s=300)
    known = await authenticator.source(write_key)
    for _ in range(5 * LIMIT):  # random keys, each unknown: one lookup each
        with pytest.raises(Unauthorized):
            await authenticator.source("pw_" + secrets.token_hex(16))
        assert len(authenticator._sources) <= LIMIT
    assert await authenticator.source(write_key) == known
    assert len(lookups) == 1 + 5 * LIMIT, "the known key was looked up once, not again"
