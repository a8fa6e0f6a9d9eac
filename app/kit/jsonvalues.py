"""Values as orjson reads and writes them: what it is told to do with those it does not
write itself, and the numbers an event can hold."""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

# RFC 8259's number.
_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")
# The integers orjson writes, and reads as integers (a longer one it reads as a float,
# rounded; it writes none).
INTEGERS = range(-(2**63), 2**64)


def uuid_text(value: Any) -> str:
    """orjson's ``default``: asyncpg's own UUID subclass (ids read from the database) as
    text; orjson writes ``uuid.UUID`` itself, but not that. Anything else is refused."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_number(text: str) -> int | float:
    """The number a JSON number's text says, as an event holds it: an integer exactly, one
    with a fraction or exponent as a float, as the tracking API reads them. Raises
    ``ValueError``, saying why, for any other text, an integer outside :data:`INTEGERS`
    (which the API would round) and a number beyond a float's range (which it would read as
    null: :func:`app.ingest.body.loads`); a column typed as a number asks for one."""
    found = _NUMBER.fullmatch(text)
    if found is None:
        raise ValueError("is not a number")
    if found[2] is None and found[3] is None:
        # The digits counted first: int() refuses 4,300 or more, in its own words.
        if len(found[1]) > 20 or int(text) not in INTEGERS:
            raise ValueError("is out of range (whole numbers from -2^63 to 2^64 - 1)")
        return int(text)
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("is out of range (numbers from about -1.8e308 to 1.8e308)")
    return number
