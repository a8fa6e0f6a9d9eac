"""Fixtures for DB-backed journey tests (helpers: tests/journey/stored.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.service import create_source
from app.config import Settings
from app.db import create_pool, create_session_factory
from app.journey.model import JourneyModel, load_model


@pytest.fixture(scope="session")
async def pool(settings: Settings, engine: AsyncEngine) -> AsyncIterator[asyncpg.Pool[Any]]:
    pool = await create_pool(settings, size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def source_id(db: AsyncEngine) -> uuid.UUID:
    async with create_session_factory(db)() as session:
        source, _ = await create_source(session, name="shop", channel="web")
        await session.commit()
    return uuid.UUID(str(source.id))


@pytest.fixture
def model_file(tmp_path: Path) -> Any:
    """Write a model file and load it: ``model_file(text, name="x.toml")``."""

    def write(text: str, name: str = "journey.toml") -> JourneyModel:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return load_model(str(path))

    return write
