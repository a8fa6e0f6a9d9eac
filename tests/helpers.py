"""Helpers shared by tests."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any


def basic(write_key: str) -> dict[str, str]:
    """Segment's auth: the write key as the HTTP Basic user name, empty password."""
    return {"authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def wait_until(
    predicate: Any, *, timeout: float = 30.0, interval: float = 0.1, log: Path | None = None
) -> Any:
    """Poll an async predicate until it returns something truthy. On timeout the tail of
    ``log`` (a child process's output) goes into the failure message."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})\n{tail}")
        await asyncio.sleep(interval)


async def scalar(engine: Any, sql: str, *params: Any) -> Any:
    """One value from the database (tests only; ``sql`` is a literal in the test)."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params[0] if params else {})).scalar()
