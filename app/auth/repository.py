"""SQL for sources (write keys) and API tokens."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, Text, bindparam, case, delete, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
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


async def list_sources(session: AsyncSession) -> Sequence[Source]:
    return (await session.execute(select(Source).order_by(Source.name))).scalars().all()


async def set_source_disabled(session: AsyncSession, source: Source, disabled: bool) -> None:
    """Disable ``source`` as of now (the transaction's time), or enable it."""
    source.disabled_at = func.now() if disabled else None
    await session.flush()


async def update_source_settings(
    session: AsyncSession,
    name: str,
    *,
    patch: dict[str, Any],
    remove: Sequence[str],
    replace_non_object: bool,
) -> Source | None:
    """Merge ``patch`` into source ``name``'s settings with ``remove``'s keys taken out, in
    one statement: keys it does not name, stored by other features, are kept, even if
    written meanwhile. Stored settings that are no JSON object (a JSON ``null`` aside, which
    reads as none) are replaced by ``patch`` alone if ``replace_non_object``, and otherwise
    left as they are: then, as for an unknown name, nothing is updated and ``None`` is
    returned. The row is locked until the transaction ends."""
    kind = func.jsonb_typeof(Source.settings)
    base = case((kind == "object", Source.settings), else_=literal({}, JSONB))
    merged = base.op("-", return_type=JSONB)(bindparam("remove", list(remove), ARRAY(Text))).op(
        "||", return_type=JSONB
    )(bindparam("patch", patch, JSONB))
    readable = kind.in_(("object", "null"))
    stmt = (
        update(Source)
        .where(Source.name == name, or_(readable, literal(replace_non_object)))
        .values(settings=merged)
        .returning(Source)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


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


async def list_tokens(session: AsyncSession) -> Sequence[ApiToken]:
    return (await session.execute(select(ApiToken).order_by(ApiToken.created_at))).scalars().all()


async def find_unrevoked_tokens(
    session: AsyncSession, name_or_prefix: str, token_id: uuid.UUID | None
) -> Sequence[ApiToken]:
    """The tokens not revoked whose name or display prefix is ``name_or_prefix``, or whose
    id is ``token_id``, oldest first."""
    match = or_(ApiToken.name == name_or_prefix, ApiToken.token_prefix == name_or_prefix)
    if token_id is not None:
        match = or_(match, ApiToken.id == token_id)
    stmt = (
        select(ApiToken)
        .where(ApiToken.revoked_at.is_(None), match)
        .order_by(ApiToken.created_at, ApiToken.id)
    )
    return (await session.execute(stmt)).scalars().all()


async def revoke_token(session: AsyncSession, token: ApiToken) -> None:
    """Revoke ``token`` as of now (the transaction's time)."""
    token.revoked_at = func.now()
    await session.flush()


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
