"""`percorso import contacts`: a CRM export through the same pipeline, as identify calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings
from app.contacts.importer import read_contacts
from app.customers.schemas import IdentifierIn
from app.db import create_pool
from app.identity.identifiers import IdentityConfig
from app.suppressions import service as suppressions
from tests.imports.commands import run_import
from tests.ingest.fixtures import SourceFactory, TopicReader

EXPORT = """\
crm_id,email,phone,first_name,lifetime_value:number,external_ids.loyalty_card,updated_at
CRM-1,Ada@Example.com,333 123 4567,Ada,1200.5,LC-1,2026-10-01T10:00:00Z
CRM-2,,,Bob,10,,2026-10-02T10:00:00Z
,,,Nobody,0,,2026-10-03T10:00:00Z
CRM-4,carla@example.com,,Carla,lots,,2026-10-04T10:00:00Z
"""


async def test_a_crm_export_becomes_identify_calls_with_per_row_verdicts(
    channel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    source, _ = await make_source(channel="crm", name="salesforce")
    file = tmp_path / "contacts.csv"
    file.write_text(EXPORT)
    result = await run_import(
        channel_settings, monkeypatch, "contacts", str(file), "--source", "salesforce"
    )
    assert result.exit_code == 0, result.output
    assert "4 rows, accepted 2, rejected 2" in result.stdout
    assert "line 4: a contact needs a crm_id, email, phone or external_ids" in result.stderr
    assert "line 5: lifetime_value:number: 'lots' is not a number" in result.stderr

    calls = {tp.traits["crm_id"]: tp for tp in await topic.touchpoints(source.id, 2)}
    ada = calls["CRM-1"]
    assert ada.type == "identify"
    assert ada.channel == "crm"
    assert ada.traits == {
        "crm_id": "CRM-1",
        "email": "Ada@Example.com",
        "phone": "333 123 4567",
        "first_name": "Ada",
        "lifetime_value": 1200.5,
    }
    assert {(i.kind, i.value) for i in ada.identifiers} == {
        ("crm_id", "CRM-1"),
        ("email", "ada@example.com"),
        ("phone", "+393331234567"),
        ("loyalty_card", "LC-1"),
    }
    assert ada.occurred_at.isoformat().startswith("2026-10-01T10:00:00")
    assert {(i.kind, i.value) for i in calls["CRM-2"].identifiers} == {("crm_id", "CRM-2")}

    again = await run_import(
        channel_settings, monkeypatch, "contacts", str(file), "--source", "salesforce"
    )
    assert again.exit_code == 0
    replayed = await topic.touchpoints(source.id, 4)
    assert {tp.message_id for tp in replayed[2:]} == {tp.message_id for tp in replayed[:2]}, (
        "a re-import reuses the message ids, so the pipeline stores each contact once"
    )


async def test_a_contact_with_a_suppressed_identifier_is_rejected_not_imported(
    channel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    """As POST /v1/contacts rejects it: the pipeline would drop it anyway."""
    source, _ = await make_source(channel="crm", name="hubspot")
    pool = await create_pool(channel_settings, size=1)
    try:
        async with pool.acquire() as connection:
            await suppressions.suppress(
                connection, IdentifierIn(kind="email", value="ada@example.com"), IdentityConfig()
            )
    finally:
        await pool.close()
    file = tmp_path / "contacts.csv"
    file.write_text("crm_id,email\nCRM-1,Ada@Example.com\nCRM-2,bob@example.com\n")
    result = await run_import(
        channel_settings, monkeypatch, "contacts", str(file), "--source", "hubspot"
    )
    assert result.exit_code == 0, result.output
    assert "2 rows, accepted 1, rejected 1" in result.stdout
    assert "line 2: suppressed: the row's email is suppressed" in result.stderr
    (only,) = await topic.touchpoints(source.id, 1)
    assert only.traits["crm_id"] == "CRM-2"


def test_contact_cells_are_trimmed_as_event_cells_are(tmp_path: Path) -> None:
    """Spreadsheets pad cells: `, 2026-01-01T00:00:00Z` is a time, ` Ada ` is Ada."""
    file = tmp_path / "contacts.csv"
    file.write_text(
        "crm_id,email,first_name,lifetime_value:number,external_ids.loyalty_card,updated_at\n"
        "CRM-9 , ada@example.com , Ada , 12 , LC-9 , 2026-01-01T00:00:00Z\n"
    )
    (row,) = read_contacts(file)
    assert row.error is None
    assert row.message is not None
    assert row.message["timestamp"] == "2026-01-01T00:00:00+00:00"
    assert row.message["traits"] == {
        "crm_id": "CRM-9",
        "email": "ada@example.com",
        "first_name": "Ada",
        "lifetime_value": 12,
    }
    assert row.message["context"]["externalIds"] == [
        {"id": "LC-9", "type": "loyalty_card", "collection": "users", "encoding": "none"}
    ]
