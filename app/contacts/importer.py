"""Reading a CRM export into contact rows for :func:`app.imports.service.import_rows`.

CSV columns (header names; empty cells are absent, others trimmed as events' are):

* ``crm_id``, ``email``, ``phone``, ``updated_at`` (ISO 8601), ``message_id``;
* ``external_ids.<type>``: an external id of that type (``external_ids.loyalty_card``);
* any other column is a trait of that name (``first_name``, ``company``, ``traits.tier``
  also works), typed by a ``:number``, ``:bool`` or ``:json`` suffix.

NDJSON: one contact object per line, as in ``POST /v1/contacts``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.contacts.service import ContactRejected, contact_message
from app.imports.mapping import MappingError, cells, put, typed
from app.imports.readers import Row, read_rows

FIELDS = frozenset({"crm_id", "email", "phone", "updated_at", "message_id"})


def read_contacts(path: Path, delimiter: str = ",") -> Iterator[Row]:
    return read_rows(
        path, delimiter, from_csv=lambda record: _call(csv_contact(record)), from_json=_call
    )


def _call(contact: Any) -> dict[str, Any]:
    """A contact as its identify call; MappingError with the reasons when it is invalid."""
    try:
        return contact_message(contact)
    except ContactRejected as exc:
        raise MappingError(
            "; ".join(
                f"{e['field']}: {e['message']}" if e.get("field") else str(e["message"])
                for e in exc.errors
            )
        ) from None


def csv_contact(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV record as a contact object; raises MappingError naming the column at fault."""
    if record.get("__extra__"):
        raise MappingError("the row has more cells than the header")
    contact: dict[str, Any] = {}
    traits: dict[str, Any] = {}
    external: list[dict[str, str]] = []
    for column, value in cells(record):
        if column in FIELDS:
            contact[column] = value
        elif column.startswith("external_ids."):
            external.append({"id": value, "type": column.removeprefix("external_ids.")})
        else:
            path, typed_value = typed(column.removeprefix("traits."), value)
            put(traits, path, typed_value, column)
    if traits:
        contact["traits"] = traits
    if external:
        contact["external_ids"] = external
    return contact
