"""The ingest hot path validates calls with msgspec (:class:`SegmentCall`) and leaves
anything it refuses to pydantic (:class:`SegmentMessage`). That is only sound while every
call msgspec accepts is one pydantic accepts too, with the same values: held here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.auth.service import SourceInfo
from app.identity.identifiers import IdentityConfig
from app.ingest import envelope, service
from app.ingest.schemas import IDS_OPTIONAL, SegmentCall, SegmentMessage
from bench.workload import generate

FIELDS = list(SegmentMessage.model_fields)

# Values each field may get: the right shapes, the wrong ones, and the edges between.
TEXT = st.one_of(
    st.text(max_size=5),
    st.sampled_from(["", " ", "ada", "null", "x" * 100, "x" * 101, "é" * 200, "é" * 201]),
)
TIMESTAMPS = st.sampled_from(
    [
        "2025-03-01T12:00:00Z",
        "2025-03-01T12:00:00.1234567Z",  # msgspec rounds this; pydantic truncates
        "2025-03-01T12:00:00.9999995+01:30",
        "2025-03-01T12:00:00.123456-05:00",  # msgspec parses these (service._time)
        "2025-03-01t12:00:00.5z",
        "2025-03-01T12:00:00.25",
        "2025-03-01T12:00:00-00:00",
        "2025-03-01T12:00:00,5Z",  # pydantic's alone
        "2025-03-01 12:00:00",
        "2025-03-01T12:00Z",
        "2025-03-01",
        "1700000000",
        "2025-02-29T00:00:00Z",
        "not a time",
        1_700_000_000,
        1_700_000_000.5,
    ]
)
ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
IDS = st.one_of(TEXT, st.integers(min_value=-(2**63), max_value=2**64 - 1))
OBJECTS = st.dictionaries(st.text(max_size=3), ANY, max_size=3)
# Per field: a value of the right shape (which may still break a limit or a rule) or
# anything at all.
SHAPES: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(["track", "page", "screen", "identify", "group", "alias", "x", None]),
    **{n: TEXT for n in ("messageId", "event", "name", "category", "writeKey")},
    **{n: IDS for n in ("userId", "anonymousId", "groupId", "previousId")},
    **{n: OBJECTS for n in ("properties", "traits", "context")},
    **{n: TIMESTAMPS for n in ("timestamp", "originalTimestamp", "sentAt", "receivedAt")},
}
VALUES = {name: st.one_of(shape, ANY) for name, shape in SHAPES.items()}


@st.composite
def calls(draw: st.DrawFn) -> dict[str, Any]:
    """A plainly valid call with up to four fields replaced (or added) at random, so that
    msgspec accepts many of them and the edges get compared."""
    raw: dict[str, Any] = {
        "type": draw(st.sampled_from(["track", "page", "identify", "group", "alias"])),
        "userId": "u-1",
        "anonymousId": "a-1",
        "event": "Order Completed",
        "groupId": "g-1",
        "previousId": "p-1",
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        raw[name] = draw(VALUES[name])
    return raw


def test_both_models_have_the_same_fields_and_limits() -> None:
    assert list(SegmentCall.__struct_fields__) == FIELDS
    assert list(envelope._Call.__struct_fields__) == FIELDS  # the batch envelope's check
    assert set(SHAPES) == set(FIELDS)
    pydantic_limits = {
        name: meta.max_length
        for name, field in SegmentMessage.model_fields.items()
        for meta in field.metadata
        if getattr(meta, "max_length", None) is not None
    }
    msgspec_limits = {}
    for field in msgspec.inspect.type_info(SegmentCall).fields:  # type: ignore[attr-defined]
        members = getattr(field.type, "types", (field.type,))
        for member in members:
            if isinstance(member, msgspec.inspect.StrType) and member.max_length is not None:
                msgspec_limits[field.name] = member.max_length
    # Names have none: a long one is cut when the event is built (service.build_event).
    assert msgspec_limits == pydantic_limits == {"messageId": 100}


@settings(max_examples=600, deadline=None)
@given(raw=calls(), ids_optional=st.booleans())
def test_what_msgspec_accepts_pydantic_accepts_alike(
    raw: dict[str, Any], ids_optional: bool
) -> None:
    fast = service._plainly_valid(raw, ids_optional)
    if fast is None:
        return  # pydantic decides; nothing to compare
    reference = SegmentMessage.model_validate(raw, context={IDS_OPTIONAL: ids_optional})
    for name in FIELDS:
        value, expected = getattr(fast, name), getattr(reference, name)
        assert value == expected, name
        assert type(value) is type(expected), name
        if isinstance(value, datetime):  # equal times may differ in offset
            assert value.utcoffset() == expected.utcoffset(), name


def test_timestamps_keep_pydantics_microseconds() -> None:
    raw = {
        "type": "track",
        "userId": "u",
        "event": "E",
        "timestamp": "2025-03-01T12:00:00.1234567Z",
    }
    fast = service._plainly_valid(raw, False)
    assert fast is not None
    assert fast.timestamp.microsecond == 123456


@st.composite
def near_rfc3339(draw: st.DrawFn) -> str:
    """Times as Segment's libraries write them, and the near misses around them: each part
    valid, out of range or oddly written."""
    date = "-".join(
        (
            draw(st.sampled_from(["2025", "0001", "9999", "0000", "20250"])),
            draw(st.sampled_from(["01", "02", "12", "13", "00", "1"])),
            draw(st.sampled_from(["01", "28", "29", "31", "00"])),
        )
    )
    separator = draw(st.sampled_from(["T", "t", " ", "_"]))
    clock = ":".join(draw(st.sampled_from(["00", "23", "24", "59", "60", "1"])) for _ in "hms")
    digits = draw(st.text(st.sampled_from("0123456789"), max_size=10))
    fraction = draw(st.sampled_from(["", f".{digits}", ",5", ".\u0663"]))
    offsets = ["", "Z", "z", "+00:00", "-00:00", "+01:30", "+0130", "+01", "-23:59", "+24:00"]
    offset = draw(st.sampled_from(offsets))
    return f"{date}{separator}{clock}{fraction}{offset}"


@settings(max_examples=1_000, deadline=None)
@given(text=near_rfc3339())
def test_times_are_parsed_as_pydantic_parses_them(text: str) -> None:
    """service._time parses RFC 3339 text with msgspec: the same verdict, instant and
    offset as pydantic's parser, which it stands in for."""
    try:
        expected: datetime | None = service._DATETIME.validate_python(text)
    except ValidationError:
        expected = None
    try:
        value: datetime | None = service._time(text)
    except ValidationError:
        value = None
    if expected is None or value is None:
        assert value is expected
        return
    assert value == expected
    assert value.utcoffset() == expected.utcoffset()
    assert (value.tzinfo is None) == (expected.tzinfo is None)


def test_the_workloads_calls_all_take_the_fast_path() -> None:
    calls = generate(2_000, 100, seed=7, prefix="fast").items
    assert all(service._plainly_valid(c, False) is not None for c in calls)


def test_touchpoint_times_are_in_a_standard_library_timezone() -> None:
    """Pydantic parses offsets into its own TzInfo, whose comparisons are many times
    slower; the pipeline sorts and compares every event's times. (The event time is the
    instant in UTC; a sent time keeps its offset.)"""
    raw = {
        "type": "track",
        "userId": "u",
        "event": "E",
        "messageId": "m",
        "timestamp": "2025-03-01T12:00:00+01:30",
        "sentAt": "2025-03-01T12:00:00Z",
    }
    source = SourceInfo(id=uuid.uuid4(), name="s", channel="web", settings={})
    (tp,), _ = service.build_all(
        [raw],
        call_type=None,
        source=source,
        received_at=datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC),
        identity=IdentityConfig(),
        request_context={},
    )
    assert tp.occurred_at == datetime(2025, 3, 1, 12, 0, 5, tzinfo=timezone(timedelta(hours=1.5)))
    assert tp.occurred_at.tzinfo is UTC
    assert tp.sent_at is not None
    assert type(tp.occurred_at.tzinfo) is timezone
    assert type(tp.sent_at.tzinfo) is timezone
