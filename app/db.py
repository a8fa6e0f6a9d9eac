"""Database plumbing: declarative base with a naming convention, engine and session factories.

Engines are built in the app's lifespan (or the consumer's startup) and passed around;
nothing here holds a module-level engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, cast

import asyncpg
import orjson
from fastapi import Depends, Request
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from app.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(
    settings: Settings, *, pool_size: int | None = None, application_name: str = "percorso"
) -> AsyncEngine:
    """``application_name`` tells the processes apart in ``pg_stat_activity``."""
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        # No ping before each checkout (three round trips with asyncpg); a connection lost
        # since fails one request with a 503 (app.errors) and the pool renews the rest.
        pool_pre_ping=False,
        json_deserializer=orjson.loads,
        connect_args={"server_settings": {"application_name": application_name}},
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def create_read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions in autocommit (see :func:`get_read_session`)."""
    return create_session_factory(engine.execution_options(isolation_level="AUTOCOMMIT"))


async def create_pool(
    settings: Settings,
    *,
    size: int = 2,
    min_size: int = 1,
    application_name: str = "percorso-pipeline",
) -> asyncpg.Pool[Any]:
    """A raw asyncpg pool: the pipeline's hot path (array-bound statements, COPY) and the
    read API's hottest queries (:func:`read_connection`). ``min_size=0`` connects on first
    use, so a process can start before the database is up.

    The pipeline owns its transactions explicitly (``conn.transaction()``); it does not go
    through SQLAlchemy, whose asyncpg adapter begins transactions lazily on its own
    statements only.

    A connection goes back to the pool as it is (asyncpg still rolls back a transaction left
    open): nothing here changes a session's state (no ``SET``, ``LISTEN``, cursors outside a
    transaction or session-level advisory locks; the pipeline's lock ends with its
    transaction), so asyncpg's default reset (``pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL``) would cost a round trip per use for nothing: a timeline page
    is one statement.
    """
    dsn = settings.sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=size,
        server_settings={"application_name": application_name},
        reset=_as_it_is,
    )
    assert pool is not None
    return pool


async def _as_it_is(connection: asyncpg.Connection[Any]) -> None:
    """A pool's ``reset``: nothing to undo (see :func:`create_pool`)."""


@asynccontextmanager
async def one_off_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session on an engine of its own, for command-line tools (closed on exit)."""
    engine = create_engine(settings, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            yield session
    finally:
        await engine.dispose()


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session of the read API. Its engine runs in autocommit: every statement sees the
    latest committed data and a GET costs no BEGIN/COMMIT round trips. Events travel
    through Kafka; the API's few writes (erasures, the suppression list) open their own
    transactions on the read pool (:func:`read_connection`)."""
    factory: async_sessionmaker[AsyncSession] = request.state.read_sessions
    async with factory() as session:
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]


@asynccontextmanager
async def read_connection(request: Request) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A connection of the API's asyncpg read pool (``request.state.read_pool``), for the
    hottest read queries (timeline pages, profiles): fixed SQL with ``$n`` parameters, values
    only in the arguments. Without a session, a timeline page costs about a third less CPU
    and a profile almost half (no ORM session, no generator dependency; ``bench.readpath``).

    Autocommit, as the read sessions: each statement sees the latest committed data. A
    pooled connection seen closed is replaced at acquire; one lost under a statement (or
    closed by the server before asyncpg saw it), or a database that cannot be reached,
    answers 503 with ``Retry-After`` (:func:`app.errors.database_unavailable`)."""
    pool: asyncpg.Pool[Any] = request.state.read_pool
    async with pool.acquire() as proxy:
        # The pool hands out a proxy that forwards every Connection method.
        yield cast("asyncpg.Connection[Any]", proxy)
