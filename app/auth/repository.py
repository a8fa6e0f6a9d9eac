"""SQL for sources (write keys) and API tokens."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiToken, Source


async def get_source_by_key_hash(session: AsyncSession, key_hash: str) -> Source | None:
    stmt = select(Source).where(Source.write_key_hash == key_hash, Source.disabled_at.is_(None))
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_source_by_id(session: AsyncSession, source_id: uuid.UUID) -> Source | None:
    stmt = select(Source).where(Source.id == source_id, Source.disabled_at.is_(None))
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_source_by_name(session: AsyncSession, name: str) -> Source | None:
    return (await session.execute(select(Source).where(Source.name == name))).scalar_one_or_none()


async def add_source(
    session: AsyncSession,
    *,
    id: uuid.UUID,
    name: str,
    channel: str,
    key_hash: str,
    key_prefix: str,
    settings: dict[str, Any],
) -> Source:
    source = Source(
        id=id,
        name=name,
        channel=channel,
        write_key_hash=key_hash,
        write_key_prefix=key_prefix,
        settings=settings,
    )
    session.add(source)
    await session.flush()
    return source


async def get_token_by_hash(session: AsyncSession, token_hash: str) -> ApiToken | None:
    stmt = select(ApiToken).where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
    return (await session.execute(stmt)).scalar_one_or_none()


async def add_token(
    session: AsyncSession, *, id: uuid.UUID, name: str, scope: str, token_hash: str, prefix: str
) -> ApiToken:
    token = ApiToken(id=id, name=name, scope=scope, token_hash=token_hash, token_prefix=prefix)
    session.add(token)
    await session.flush()
    return token


async def set_source_key(
    session: AsyncSession, source: Source, key_hash: str, key_prefix: str
) -> None:
    source.write_key_hash = key_hash
    source.write_key_prefix = key_prefix
    await session.flush()


async def delete_tokens_named(session: AsyncSession, name: str) -> None:
    await session.execute(delete(ApiToken).where(ApiToken.name == name))
