"""The tracking API publishes touchpoint bytes built from plain dicts (``build_messages``);
everything else builds :class:`Touchpoint` models (``build_all``). Both must put the very
same bytes on the broker, and those bytes must decode to the same model."""

from __future__ import annotations

import itertools
import random
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import pytest
from asyncpg.pgproto.pgproto import UUID as PgUUID

from app.auth.service import SourceInfo
from app.identity.identifiers import IdentityConfig
from app.ingest import service
from app.touchpoint import Identifier, InvalidTouchpoint, Touchpoint
from bench.workload import generate

RECEIVED = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
# As the authenticator loads it: asyncpg's own UUID type.
SOURCE = SourceInfo(PgUUID("0190a000-0000-7000-8000-000000000001"), "web", "web", {})

EDGE_CASES: list[dict[str, Any]] = [
    {"type": "track", "userId": "ada", "event": "Signed Up"},
    {"type": "track", "userId": 42, "event": "n", "timestamp": "2025-03-01T11:00:00+02:00"},
    {"type": "track", "anonymousId": "a1", "event": "n", "timestamp": "2025-03-01T11:00:00"},
    {
        "type": "track",
        "anonymousId": "a1",
        "event": "n",
        "originalTimestamp": "2025-03-01T11:59:59.5Z",
        "sentAt": "2025-03-01T12:00:00.000001+01:30",
    },
    {"type": "track", "userId": "u", "event": "future", "timestamp": "2030-01-01T00:00:00Z"},
    {
        "type": "identify",
        "userId": "u1",
        "traits": {
            "email": " Ada@Example.COM ",
            "phone": "333 123 4567",
            "crmId": 7,
            "nested": {"a": [1, 2.5, -0.0, 1e300, None, True, "é✓"]},
            "big": 18446744073709551615,
            "neg": -9223372036854775808,
        },
    },
    {"type": "page", "anonymousId": "a2", "name": "Home", "category": "Docs"},
    {
        "type": "screen",
        "userId": "u2",
        "name": "Cart",
        "category": "App",
        "properties": {"x": "\u2028"},
    },
    {"type": "group", "userId": "u3", "groupId": 99, "traits": {"email": "co@example.com"}},
    {"type": "alias", "userId": "u4", "previousId": "anon-9"},
    {"type": "alias", "userId": "u4", "previousId": "u4"},
    {
        "type": "track",
        "userId": "null",
        "anonymousId": "a3",
        "event": "blocked user id",
        "context": {
            "channel": "email",
            "traits": {"email": "not-an-email"},
            "externalIds": [
                {"id": "LC-1", "type": "Loyalty Card", "collection": "users"},
                {"id": "x", "type": "account", "collection": "accounts"},
                "junk",
            ],
        },
    },
    {"type": "track", "userId": "u5", "event": "n", "context": {"channel": "telepathy"}},
    {"type": "track", "userId": "u6", "event": "own id", "messageId": "m-6"},
    # Rejected: no identifier left, no event name, not an object, no type.
    {"type": "track", "userId": "undefined", "event": "n"},
    {"type": "track", "userId": "u7"},
    "not an object",
    {"userId": "u8", "event": "n"},
]


def _both(
    monkeypatch: pytest.MonkeyPatch, items: list[Any], **kwargs: Any
) -> tuple[tuple[list[Touchpoint], list[Any]], tuple[list[tuple[bytes, bytes]], list[Any]]]:
    common: dict[str, Any] = {
        "call_type": None,
        "source": SOURCE,
        "received_at": RECEIVED,
        "identity": IdentityConfig(),
        "request_context": {"ip": "203.0.113.9", "userAgent": "test"},
        **kwargs,
    }
    # Event ids are random: give both paths the same sequence.
    monkeypatch.setattr(service, "new_event_id_str", _ids())
    models = service.build_all(items, **common)
    monkeypatch.setattr(service, "new_event_id_str", _ids())
    messages = service.build_messages(items, **common)
    return models, messages


def _ids() -> Any:
    counter = itertools.count(1)
    return lambda: str(uuid.UUID(int=(7 << 76) | next(counter)))


def _assert_same(models: tuple[list[Touchpoint], list[Any]], messages: Any) -> None:
    touchpoints, model_rejections = models
    pairs, message_rejections = messages
    assert message_rejections == model_rejections
    assert len(pairs) == len(touchpoints)
    for tp, (key, value) in zip(touchpoints, pairs, strict=True):
        assert value == tp.to_bytes()
        assert key == service.partition_key(tp)
        assert Touchpoint.from_bytes(value) == tp


def test_edge_cases_give_identical_bytes_keys_and_rejections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models, messages = _both(monkeypatch, EDGE_CASES)
    assert len(models[0]) == len(EDGE_CASES) - 4
    assert [r.index for r in models[1]] == [14, 15, 16, 17]
    _assert_same(models, messages)


def test_batch_context_and_sent_at_give_identical_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models, messages = _both(
        monkeypatch,
        EDGE_CASES[:14],
        batch_context={"library": {"name": "analytics-python"}, "ip": "198.51.100.1"},
        sent_at=datetime(2025, 3, 1, 11, 59, 58, tzinfo=UTC),
    )
    assert any("clock_skew_corrected" in tp.flags for tp in models[0])
    _assert_same(models, messages)


def test_single_calls_give_identical_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    for item in ({"userId": "ada", "event": "Opened"}, {"anonymousId": 5, "name": "Home"}):
        call_type = "track" if "event" in item else "page"
        _assert_same(*_both(monkeypatch, [item], call_type=call_type))


def test_the_benchmark_workload_gives_identical_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    work = generate(2_000, 100, seed=3)
    models, messages = _both(monkeypatch, work.items)
    assert len(models[0]) > 1_900
    _assert_same(models, messages)


def test_keys_go_to_the_partition_kafkas_default_partitioner_chooses() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from app.ingest.publisher import partition_for, partitions_for

    rng = random.Random(7)
    keys = [f"anon-{n * 7919}".encode() for n in range(500)]
    keys += [rng.randbytes(length) for length in range(70) for _ in range(10)]  # every tail
    for partitions in (1, 6, 12):
        expected = [DefaultPartitioner()(key, list(range(partitions)), []) for key in keys]
        assert [partition_for(key, partitions) for key in keys] == expected
        assert partitions_for(keys, partitions) == expected


def _one_touchpoint() -> Touchpoint:
    (touchpoint,), _ = service.build_all(
        [EDGE_CASES[6]],
        call_type=None,
        source=SOURCE,
        received_at=RECEIVED,
        identity=IdentityConfig(),
        request_context={},
    )
    return touchpoint


def test_a_consumer_ignores_fields_a_newer_producer_adds() -> None:
    tp = _one_touchpoint()
    newer = orjson.loads(tp.to_bytes()) | {"added_later": {"x": 1}, "schema_version": 2}
    decoded = Touchpoint.from_bytes(orjson.dumps(newer))
    assert decoded.schema_version == 2
    assert msgspec.structs.replace(decoded, schema_version=tp.schema_version) == tp


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"type": "click"}, "type"),
        ({"channel": "fax"}, "channel"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"identifiers": [{"kind": "email"}]}, "identifiers[0]"),
    ],
)
def test_a_touchpoint_of_the_wrong_types_is_refused_by_name(
    change: dict[str, Any], field: str
) -> None:
    raw = orjson.loads(_one_touchpoint().to_bytes()) | change
    with pytest.raises(InvalidTouchpoint, match=re.escape(f"$.{field}")):
        Touchpoint.from_bytes(orjson.dumps(raw))
    with pytest.raises(InvalidTouchpoint, match=re.escape(f"$.{field}")):
        Touchpoint.validate(raw)


def test_bytes_that_are_not_json_are_refused() -> None:
    with pytest.raises(InvalidTouchpoint):
        Touchpoint.from_bytes(b"\x00not json")


def test_equal_identifiers_are_one_key() -> None:
    a, b = Identifier(kind="email", value="ada@example.com"), Identifier("email", "ada@example.com")
    assert a == b
    assert {a: 1}[b] == 1
    assert a != Identifier(kind="email", value="bob@example.com")
