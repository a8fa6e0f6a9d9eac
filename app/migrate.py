"""Applying the Alembic migrations programmatically (``percorso migrate``, dev, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


def _root() -> Path:
    """Where alembic.ini and migrations/ are: the source checkout, or the working
    directory of an installed package (the Docker image keeps them in /srv)."""
    for candidate in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (candidate / "alembic.ini").is_file():
            return candidate
    raise RuntimeError("alembic.ini not found next to the package or in the working directory")


def alembic_config(url: str) -> Config:
    root = _root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
