"""What orjson is told to do with values it does not write itself."""

from __future__ import annotations

import uuid
from typing import Any


def uuid_text(value: Any) -> str:
    """orjson's ``default``: asyncpg's own UUID subclass (ids read from the database) as
    text; orjson writes ``uuid.UUID`` itself, but not that. Anything else is refused."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
