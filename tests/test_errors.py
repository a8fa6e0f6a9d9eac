"""Which errors say the database could not be reached (a 503 to retry), and which stay
what they are: a client's mistake, or a bug (app.errors.database_unavailable)."""

from __future__ import annotations

import socket

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.config import Settings
from app.errors import ServiceUnavailable, database_unavailable
from app.kit.embedded import free_port, with_database


async def _raised_by_sqlalchemy(url: str, sql: str) -> Exception:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError(f"{sql} on {url} raised nothing")


async def test_a_database_that_cannot_be_reached_or_refuses_the_connection_is_a_503(
    settings: Settings,
) -> None:
    closed = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/percorso"
    refused = await _raised_by_sqlalchemy(closed, "SELECT 1")
    assert isinstance(refused, ConnectionRefusedError)  # as asyncpg raised it
    unknown = with_database(settings.sqlalchemy_url, "percorso_no_such_database")
    no_database = await _raised_by_sqlalchemy(unknown, "SELECT 1")
    assert isinstance(no_database, DBAPIError)  # SQLAlchemy's, of asyncpg's InvalidCatalogName
    unreachable = [
        refused,
        no_database,
        TimeoutError(),  # asyncpg's connect timeout
        socket.gaierror(-2, "Name or service not known"),
        OSError("Multiple exceptions: [Errno 111] ..., [Errno 99] ..."),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.InvalidCatalogNameError('database "x" does not exist'),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    ]
    for exc in unreachable:
        problem = database_unavailable(exc)
        assert isinstance(problem, ServiceUnavailable), repr(exc)
        assert problem.headers["Retry-After"] == "1"


async def test_a_bug_or_a_refused_statement_is_no_503(db: AsyncEngine) -> None:
    url = db.url.render_as_string(hide_password=False)
    others = [
        await _raised_by_sqlalchemy(url, "SELECT * FROM no_such_table"),
        await _raised_by_sqlalchemy(url, "SELECT 1 / 0"),
        asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        FileNotFoundError(2, "No such file or directory"),
        PermissionError(13, "Permission denied"),
        ValueError("not a database error"),
    ]
    for exc in others:
        assert database_unavailable(exc) is None, repr(exc)
