"""CSV columns → a Segment-shaped call. Documented in the README ("Importing files").

Columns (header names, case-sensitive; empty cells are absent):

* ``type`` (default ``track``), ``event`` (track), ``name`` (page/screen), ``userId``,
  ``anonymousId``, ``groupId``, ``previousId``, ``messageId``, ``timestamp`` (ISO 8601;
  default: the import time);
* ``email``, ``phone``, ``crmId`` (or ``crm_id``): the person, as ``context.traits`` (and
  ``traits`` on identify rows), so a row may be identified by these alone;
* ``channel``: the row's channel (``context.channel``), else the source's default;
* ``properties.<x>``, ``traits.<x>``, ``context.<x>``: nested fields, dotted paths allowed
  (``context.campaign.name``). A ``:number``, ``:bool`` or ``:json`` suffix types the
  value (``properties.revenue:number``); without one, values stay strings (``"00123"`` is
  a zip code, not a number). ``traits`` are the call's own on identify and group rows; on
  any other row they are the person's, so they go to ``context.traits`` (where a track
  call carries them, and the profile reads them), ``context.traits.<x>`` winning.

Any other column is an error for the row, so a typo does not silently drop data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from app.kit.jsonvalues import json_number

TOP_LEVEL = frozenset(
    {"type", "event", "name", "userId", "anonymousId", "groupId", "previousId", "messageId"}
)
TIME_COLUMNS = frozenset({"timestamp"})
PERSON_COLUMNS = {"email": "email", "phone": "phone", "crmId": "crm_id", "crm_id": "crm_id"}
NESTED = ("properties", "traits", "context")


class MappingError(ValueError):
    pass


def csv_row_to_message(row: dict[str, Any]) -> dict[str, Any]:
    """The call for one CSV record; raises :class:`MappingError` with the column at fault."""
    if row.get("__extra__"):
        raise MappingError("more cells than header columns")
    message: dict[str, Any] = {}
    person: dict[str, str] = {}
    for column, value in cells(row):
        if column in TOP_LEVEL or column in TIME_COLUMNS:
            message[column] = value
        elif column in PERSON_COLUMNS:
            person[PERSON_COLUMNS[column]] = value
        elif column == "channel":
            message.setdefault("context", {})["channel"] = value
        elif column.split(".", 1)[0] in NESTED and "." in column:
            path, value_typed = typed(column, value)
            put(message, path, value_typed, column)
        else:
            raise MappingError(f"unknown column {column!r}")
    message.setdefault("type", "track")
    if "traits" in message and message["type"] not in ("identify", "group"):
        # A track, page, screen or alias call has no traits of its own (Segment's spec):
        # kept there, they would reach neither the profile nor the timeline.
        traits = message.pop("traits")
        context = message.setdefault("context", {})
        given = context.get("traits")
        if given is not None and not isinstance(given, dict):
            raise MappingError("traits.<x> columns conflict with context.traits")
        context["traits"] = {**traits, **(given or {})}
    if person:
        context = message.setdefault("context", {})
        context.setdefault("traits", {}).update(person)
        if message["type"] == "identify":
            message.setdefault("traits", {}).update(person)
    return message


def cells(record: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """A CSV record's cells, but for empty ones, trimmed of the spaces around them
    (spreadsheets and hand-edited files pad them): ``(column, value)``."""
    for column, cell in record.items():
        if column == "__extra__" or cell is None or cell == "":
            continue
        yield column, cell.strip()


def typed(column: str, value: str) -> tuple[list[str], Any]:
    """A column's dotted path and its value, typed by a ``:number``/``:bool``/``:json`` suffix."""
    name, _, kind = column.partition(":")
    path = name.split(".")
    if any(not part for part in path):
        raise MappingError(f"column {column!r} has an empty path segment")
    if not kind:
        return path, value
    if kind == "number":
        try:
            return path, json_number(value)
        except ValueError as exc:
            raise MappingError(f"{column}: {value[:40]!r} {exc}") from None
    if kind == "bool":
        lowered = value.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise MappingError(f"{column}: {value[:40]!r} is not true/false")
        return path, lowered in ("true", "1", "yes")
    if kind == "json":
        try:
            return path, orjson.loads(value)
        except orjson.JSONDecodeError:
            raise MappingError(f"{column}: not valid JSON") from None
    raise MappingError(f"column {column!r}: unknown type {kind!r} (number, bool or json)")


def put(message: dict[str, Any], path: list[str], value: Any, column: str) -> None:
    node = message
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise MappingError(f"column {column!r} conflicts with another column")
        node = child
    if isinstance(node.get(path[-1]), dict):
        raise MappingError(f"column {column!r} conflicts with another column")
    node[path[-1]] = value
