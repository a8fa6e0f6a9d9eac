"""`percorso import events`: offline touchpoints through the same pipeline."""

from __future__ import annotations

import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.service import SourceInfo
from app.config import Settings
from app.customers.schemas import IdentifierIn
from app.db import create_pool
from app.identity.identifiers import IdentityConfig
from app.imports.mapping import MappingError, csv_row_to_message
from app.imports.readers import Row
from app.imports.service import Verdict, import_rows
from app.suppressions import service as suppressions
from tests.imports.commands import run_import
from tests.ingest.fixtures import SourceFactory, TopicReader

RECEIPTS = """\
type,event,email,phone,timestamp,properties.receipt,properties.revenue:number,properties.store,context.till.id
track,Order Completed,ada@example.com,,2026-11-02T09:15:00Z,R-1,42.50,milano-1,T3
track,Order Completed,,+39 333 123 4567,2026-11-02T09:20:00Z,R-2,7,milano-1,T3
track,Order Completed,,,2026-11-02T09:25:00Z,R-3,10,milano-1,T3
track,Order Completed,bob@example.com,,2026-11-02T09:30:00Z,R-4,ten,milano-1,T3
track,,carla@example.com,,2026-11-02T09:35:00Z,R-5,3,milano-1,T3
"""


async def _import(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    return await run_import(settings, monkeypatch, "events", *args)


async def test_a_csv_of_till_receipts_is_imported_with_per_row_verdicts(
    channel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    source, _ = await make_source(channel="in_store", name="till-milano")
    file = tmp_path / "receipts-2026-11-02.csv"
    file.write_text(RECEIPTS)
    result = await _import(channel_settings, monkeypatch, str(file), "--source", "till-milano")
    assert result.exit_code == 0, result.output
    assert "5 rows, accepted 2, rejected 3" in result.stdout
    assert "line 4: " in result.stderr  # no identifier at all
    assert "line 5: properties.revenue:number: 'ten' is not a number" in result.stderr
    assert "line 6: " in result.stderr
    assert "event name" in result.stderr

    first = await topic.touchpoints(source.id, 2)
    by_receipt = {tp.properties["receipt"]: tp for tp in first}
    ada = by_receipt["R-1"]
    assert ada.channel == "in_store"
    assert ada.event == "Order Completed"
    assert ada.properties == {"receipt": "R-1", "revenue": 42.5, "store": "milano-1"}
    assert ada.context["till"] == {"id": "T3"}
    assert ada.occurred_at.isoformat() == "2026-11-02T09:15:00+00:00"
    assert [(i.kind, i.value) for i in ada.identifiers] == [("email", "ada@example.com")]
    assert by_receipt["R-2"].identifiers[0].value == "+393331234567"
    assert by_receipt["R-2"].properties["revenue"] == 7

    # Importing the same file again gives the same messageIds: the pipeline drops them.
    again = await _import(channel_settings, monkeypatch, str(file), "--source", "till-milano")
    assert again.exit_code == 0
    second = await topic.touchpoints(source.id, 4)
    assert sorted(tp.message_id for tp in second[2:]) == sorted(tp.message_id for tp in first)


async def test_a_track_rows_trait_columns_travel_as_the_persons_traits(
    channel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    # Left as the call's own traits, a track call's traits reached neither profile nor timeline.
    source, _ = await make_source(channel="in_store", name="till-torino")
    file = tmp_path / "receipts.csv"
    file.write_text("event,email,traits.name\nIn-Store Purchase,bea@example.com,Bea\n")
    result = await _import(channel_settings, monkeypatch, str(file), "--source", "till-torino")
    assert result.exit_code == 0, result.output
    (bea,) = await topic.touchpoints(source.id, 1)
    assert bea.context["traits"] == {"name": "Bea", "email": "bea@example.com"}
    assert bea.traits == {}


async def test_ndjson_lines_are_calls_and_broken_lines_are_reported(
    channel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    source, _ = await make_source(channel="social", name="instagram")
    lines = [
        orjson.dumps({"userId": "ada", "event": "Post Liked", "messageId": "ig-1"}),
        b"{broken",
        b"",
        orjson.dumps([1, 2]),
        orjson.dumps({"type": "identify", "userId": "ada", "traits": {"email": "ada@example.com"}}),
    ]
    file = tmp_path / "social.ndjson"
    file.write_bytes(b"\n".join(lines) + b"\n")
    report = tmp_path / "rejected.ndjson"
    result = await _import(
        channel_settings, monkeypatch, str(file), "--source", "instagram", "--report", str(report)
    )
    assert result.exit_code == 0, result.output
    assert "4 rows, accepted 2, rejected 2" in result.stdout
    rejected = [orjson.loads(line) for line in report.read_bytes().splitlines()]
    assert [r["line"] for r in rejected] == [2, 4]
    assert "not valid JSON" in rejected[0]["reason"]
    touchpoints = await topic.touchpoints(source.id, 2)
    assert {tp.type for tp in touchpoints} == {"track", "identify"}
    assert all(tp.channel == "social" for tp in touchpoints)
    assert touchpoints[0].message_id == "ig-1"
    assert touchpoints[0].context["library"]["name"] == "percorso-import"


async def test_ndjson_calls_sent_long_ago_keep_their_time(
    channel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    # Stored calls carry the sentAt of their first send, long before this import: the clock
    # correction (receivedAt - sentAt) measured against the import's clock moved each one
    # to the time of the import.
    source, _ = await make_source(name="archive")
    lines = [
        # As Segment's and RudderStack's archives keep an event: `timestamp` corrected.
        {
            "messageId": "archived",
            "userId": "ada",
            "event": "Order Completed",
            "originalTimestamp": "2025-03-01T09:59:58Z",
            "timestamp": "2025-03-01T10:00:00Z",
            "sentAt": "2025-03-01T10:00:01Z",
            "receivedAt": "2025-03-01T10:00:02Z",
        },
        # As a library sent it (a request log): its own times only.
        {
            "messageId": "logged",
            "userId": "ada",
            "event": "Product Viewed",
            "timestamp": "2025-03-01T09:00:00Z",
            "sentAt": "2025-03-01T09:00:05Z",
        },
    ]
    file = tmp_path / "archive.ndjson"
    file.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    result = await _import(channel_settings, monkeypatch, str(file), "--source", "archive")
    assert result.exit_code == 0, result.output
    stored = {tp.message_id: tp for tp in await topic.touchpoints(source.id, 2)}
    assert stored["archived"].occurred_at.isoformat() == "2025-03-01T10:00:00+00:00"
    assert stored["logged"].occurred_at.isoformat() == "2025-03-01T09:00:00+00:00"
    assert stored["logged"].sent_at.isoformat() == "2025-03-01T09:00:05+00:00"
    assert "clock_skew_corrected" not in stored["logged"].flags


async def test_a_cell_over_the_csv_field_limit_is_one_rejected_row(
    channel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    """A cell over the csv module's field limit (128 KiB), quoted across lines, is its row's
    alone: refused as any event over 32 KB, and the rows around it imported."""
    source, _ = await make_source(name="notes")
    big = "x" * (128 * 1024 + 1)
    file = tmp_path / "notes.csv"
    file.write_text(
        f'userId,event,properties.note\nada,First,a\nada,Big,"{big}\nmore"\nada,Last,b\n'
    )
    result = await _import(channel_settings, monkeypatch, str(file), "--source", "notes")
    assert result.exit_code == 0, result.output
    assert "3 rows, accepted 2, rejected 1" in result.stdout
    assert "line 4: an event is at most 32 KB" in result.stderr
    imported = await topic.touchpoints(source.id, 2)
    assert [(tp.event, tp.properties) for tp in imported] == [
        ("First", {"note": "a"}),
        ("Last", {"note": "b"}),
    ]
    assert len([tp for tp in topic.seen if tp.source_id == source.id]) == 2


async def test_number_cells_are_stored_exactly_or_refused_saying_why(
    channel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    """A `:number` integer is stored digit for digit, a decimal as a finite float; one the
    tracking API would round or refuse is its row's rejection, with the range."""
    source, _ = await make_source(name="amounts")
    file = tmp_path / "amounts.csv"
    file.write_text(
        "userId,event,properties.n:number\n"
        "ada,Exact,12345678901234567\n"
        "ada,Large,1e20\n"
        "ada,Infinite,1e400\n"
        "ada,Wide,18446744073709551616\n"
    )
    result = await _import(channel_settings, monkeypatch, str(file), "--source", "amounts")
    assert result.exit_code == 0, result.output
    assert "4 rows, accepted 2, rejected 2" in result.stdout
    assert (
        "line 4: properties.n:number: '1e400' is out of range"
        " (numbers from about -1.8e308 to 1.8e308)"
    ) in result.stderr
    assert (
        "line 5: properties.n:number: '18446744073709551616' is out of range"
        " (whole numbers from -2^63 to 2^64 - 1)"
    ) in result.stderr
    imported = await topic.touchpoints(source.id, 2)
    assert [(tp.event, tp.properties) for tp in imported] == [
        ("Exact", {"n": 12345678901234567}),
        ("Large", {"n": 1e20}),
    ]
    assert len([tp for tp in topic.seen if tp.source_id == source.id]) == 2


@pytest.mark.parametrize(
    ("cell", "number"),
    [
        ("18446744073709551615", 2**64 - 1),
        ("-9223372036854775808", -(2**63)),
        ("-0", 0),
        ("42.50", 42.5),
        ("1e2", 100.0),
        ("1e-400", 0.0),
    ],
)
def test_number_cells_read_as_the_tracking_api_reads_json(cell: str, number: float) -> None:
    message = csv_row_to_message({"properties.n:number": cell})
    assert message["properties"]["n"] == number
    assert type(message["properties"]["n"]) is type(orjson.loads(cell))


@pytest.mark.parametrize(
    "cell", ["18446744073709551616", "-9223372036854775809", "9" * 5000, "-1e400", "1" * 400 + ".5"]
)
def test_number_cells_beyond_what_an_event_holds_are_refused(cell: str) -> None:
    with pytest.raises(MappingError, match=r"is out of range \("):
        csv_row_to_message({"properties.n:number": cell})


async def test_nothing_accepted_exits_1_and_usage_errors_exit_2(
    channel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_source: SourceFactory,
) -> None:
    await make_source(name="till")
    bad = tmp_path / "bad.csv"
    bad.write_text("type,event,colour\ntrack,E,red\n")
    result = await _import(channel_settings, monkeypatch, str(bad), "--source", "till")
    assert result.exit_code == 1
    assert "unknown column 'colour'" in result.stderr
    wrong_format = tmp_path / "data.xlsx"
    wrong_format.write_text("x")
    assert (
        await _import(channel_settings, monkeypatch, str(wrong_format), "--source", "till")
    ).exit_code == 2
    missing = await _import(
        channel_settings, monkeypatch, str(tmp_path / "nope.csv"), "--source", "till"
    )
    assert missing.exit_code == 2
    unknown_source = tmp_path / "ok.csv"
    unknown_source.write_text("event,userId\nE,ada\n")
    result = await _import(channel_settings, monkeypatch, str(unknown_source), "--source", "nope")
    assert result.exit_code == 1
    assert "no enabled source" in result.stderr


async def test_a_report_that_cannot_be_written_is_a_usage_error_before_importing(
    channel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    # Written after the import, such a report failed with a traceback once every row was
    # published, and the summary of what was imported was never shown.
    source, _ = await make_source(name="till")
    file = tmp_path / "receipts.csv"
    file.write_text("event,userId\nE,ada\n")
    result = await _import(
        channel_settings,
        monkeypatch,
        str(file),
        "--source",
        "till",
        "--report",
        str(tmp_path / "no-such-directory" / "rejected.ndjson"),
    )
    assert result.exit_code == 2, result.output
    assert "error: --report: " in result.stderr
    assert "no-such-directory" in result.stderr
    with pytest.raises(AssertionError):
        await topic.touchpoints(source.id, 1, timeout=1.0)


async def test_rejected_rows_are_handed_on_as_they_come_not_held(settings: Settings) -> None:
    # An import kept every rejection until its end: 2,000,000 rows of a CSV with a column
    # it does not know (a wrong --delimiter does the same) grew the process by 537 MB.
    def rows() -> Iterator[Row]:
        for line in range(2, 200_002):
            yield Row(line, None, "unknown column 'colour'", b"")

    handed: list[int] = []

    def rejected(verdict: Verdict) -> None:
        if verdict.line % 50_000 == 0:
            handed.append(verdict.line)

    pool = await create_pool(settings, size=1)
    tracemalloc.start()
    try:
        async with pool.acquire() as connection:
            summary = await import_rows(
                rows(),
                file_name="receipts.csv",
                source=SourceInfo(uuid.uuid4(), "till", "in_store", {}),
                identity=IdentityConfig(),
                publisher=None,
                connection=connection,
                on_rejected=rejected,
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await pool.close()
    assert (summary.rows, summary.accepted, summary.rejected) == (200_000, 0, 200_000)
    assert handed == [50_000, 100_000, 150_000, 200_000]
    assert peak < 1_000_000, peak


class CountingConnection:
    """A connection that counts the statements it is asked to run."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.statements = 0

    async def fetch(self, *args: Any) -> Any:
        self.statements += 1
        return await self.connection.fetch(*args)


async def test_rows_with_a_suppressed_identifier_are_rejected_one_query_a_chunk(
    settings: Settings, db: AsyncEngine
) -> None:
    """The pipeline would drop them: reported accepted, they were not imported at all."""
    suppressed = [
        ("email", "Ada@Example.com"),
        ("user_id", "u-erased"),
        ("loyalty_card", "LC-1"),
    ]
    loyalty = {"id": "LC-1", "type": "loyalty_card", "collection": "users", "encoding": "none"}
    messages: list[dict[str, Any] | None] = [
        # The same email, spelt otherwise.
        {"event": "E", "context": {"traits": {"email": "ADA@example.com "}}},
        {"event": "E", "userId": "u-2"},
        # An alias from the erased user id: the pipeline drops it too.
        {"type": "alias", "userId": "u-new", "previousId": "u-erased"},
        {"event": "E", "anonymousId": "a-1", "context": {"externalIds": [loyalty]}},
        {"event": "E", "userId": "u-erased", "context": {"traits": {"email": "ada@example.com"}}},
        {"event": "E", "userId": "u-6"},
        None,  # refused before any query
    ]
    rows = [
        Row(line, message, None if message else "unknown column 'colour'", b"")
        for line, message in enumerate(messages, start=2)
    ]
    pool = await create_pool(settings, size=1)
    refused: list[Verdict] = []
    try:
        async with pool.acquire() as connection:
            for kind, value in suppressed:
                await suppressions.suppress(
                    connection, IdentifierIn(kind=kind, value=value), IdentityConfig()
                )
            counting = CountingConnection(connection)
            summary = await import_rows(
                rows,
                file_name="events.csv",
                source=SourceInfo(uuid.uuid4(), "till", "in_store", {}),
                identity=IdentityConfig(),
                publisher=None,
                connection=counting,  # type: ignore[arg-type]
                chunk_size=3,
                on_rejected=refused.append,
            )
    finally:
        await pool.close()
    assert (summary.rows, summary.accepted, summary.rejected) == (7, 2, 5)
    assert counting.statements == 2  # 6 buildable rows in chunks of 3
    reasons = {verdict.line: verdict.reason for verdict in refused}
    assert reasons.keys() == {2, 4, 5, 6, 8}
    assert reasons[2] == (
        "suppressed: the row's email is suppressed (erased, or no longer to be processed):"
        " the pipeline would drop it"
    )
    assert reasons[4].startswith("suppressed: the row's user_id is suppressed")
    assert reasons[5].startswith("suppressed: the row's loyalty_card is suppressed")
    assert reasons[6].startswith("suppressed: the row's user_id and email are suppressed")
    assert reasons[8] == "unknown column 'colour'"
    assert "ada" not in str(reasons).lower()  # kinds only, never a value


async def test_dry_run_checks_rows_and_publishes_nothing(
    channel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_source: SourceFactory,
    topic: TopicReader,
) -> None:
    source, _ = await make_source(name="dry")
    file = tmp_path / "dry.csv"
    file.write_text("event;userId\nE;ada\n")
    result = await _import(
        channel_settings, monkeypatch, str(file), "--source", "dry", "--delimiter", ";", "--dry-run"
    )
    assert result.exit_code == 0, result.output
    assert "would accept 1" in result.stdout
    with pytest.raises(AssertionError):
        await topic.touchpoints(source.id, 1, timeout=1.0)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"event": "E", "userId": "u"}, {"type": "track", "event": "E", "userId": "u"}),
        (
            {"type": "identify", "email": "a@b.example", "traits.name": "Ada"},
            {
                "type": "identify",
                "traits": {"name": "Ada", "email": "a@b.example"},
                "context": {"traits": {"email": "a@b.example"}},
            },
        ),
        (
            {
                "event": "E",
                "anonymousId": "x",
                "properties.ok:bool": "yes",
                "properties.tags:json": '["a"]',
                "properties.zip": "00123",
                "channel": "call_center",
            },
            {
                "type": "track",
                "event": "E",
                "anonymousId": "x",
                "properties": {"ok": True, "tags": ["a"], "zip": "00123"},
                "context": {"channel": "call_center"},
            },
        ),
        ({"event": "", "userId": "u", "properties.empty": ""}, {"type": "track", "userId": "u"}),
        # A track row's traits are the person's: context.traits, where the profile reads them.
        (
            {
                "event": "E",
                "email": "a@b.example",
                "traits.name": "Bea",
                "traits.tier": "gold",
                "context.traits.tier": "silver",
            },
            {
                "type": "track",
                "event": "E",
                "context": {"traits": {"name": "Bea", "tier": "silver", "email": "a@b.example"}},
            },
        ),
        # A group row's traits are the group's.
        (
            {"type": "group", "userId": "u", "groupId": "g", "traits.name": "Acme"},
            {"type": "group", "userId": "u", "groupId": "g", "traits": {"name": "Acme"}},
        ),
    ],
)
def test_csv_columns_map_to_segment_fields(row: dict[str, str], message: dict[str, Any]) -> None:
    assert csv_row_to_message(row) == message


@pytest.mark.parametrize(
    "row",
    [
        {"colour": "red"},
        {"properties.x:date": "2026"},
        {"properties.a": "1", "properties.a.b": "2"},
        {"event": "E", "__extra__": ["surplus"]},
        {"event": "E", "userId": "u", "traits.name": "Bea", "context.traits:json": '"x"'},
    ],
)
def test_bad_csv_rows_are_mapping_errors(row: dict[str, Any]) -> None:
    with pytest.raises(MappingError):
        csv_row_to_message(row)
