"""Batch envelopes: a plainly valid ``/v1/batch`` goes to the broker whole, and the
pipeline builds the touchpoints the per-event path would have published."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import orjson
import pytest
from hypothesis import given, settings
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.service import SourceInfo
from app.config import Settings
from app.identity.identifiers import IdentityConfig
from app.ingest import envelope, service
from app.ingest.publisher import partition_for
from app.ingest.schemas import MAX_EVENT_BYTES
from app.touchpoint import InvalidTouchpoint, Touchpoint
from bench.workload import generate
from tests.helpers import basic
from tests.ingest.fixtures import SourceFactory, TopicReader, asgi_client
from tests.ingest.test_fast_validation import calls

SOURCE = SourceInfo(id=uuid.uuid4(), name="s", channel="web", settings={})
ARRIVAL: service.Arrival = {
    "source": SOURCE,
    "received_at": datetime(2025, 3, 1, 12, tzinfo=UTC),
    "identity": IdentityConfig(),
    "request_context": {"ip": "203.0.113.9", "userAgent": "test"},
    "batch_context": {"library": {"name": "analytics-python"}},
    "sent_at": datetime(2025, 3, 1, 11, 59, 58, tzinfo=UTC),
}


def _calls(*items: dict[str, Any]) -> list[msgspec.Raw]:
    whole = envelope.decode_batch(orjson.dumps({"batch": list(items)}))
    assert whole is not None
    return whole.batch


def _admitted(
    *items: dict[str, Any], arrival: service.Arrival = ARRIVAL
) -> envelope.Admitted | None:
    """:func:`envelope.admitted` of a body holding ``items``."""
    body = orjson.dumps({"batch": list(items)})
    whole = envelope.decode_batch(body)
    assert whole is not None
    return envelope.admitted(body, whole.batch, arrival)


def _keys(*items: dict[str, Any], arrival: service.Arrival = ARRIVAL) -> list[bytes] | None:
    """The partition keys :func:`envelope.admitted` gives a body holding ``items``."""
    admitted = _admitted(*items, arrival=arrival)
    return None if admitted is None else admitted.keys


def _sealed(*items: dict[str, Any]) -> bytes:
    """One envelope of ``items``, whatever they are."""
    ((_, _, value),) = envelope.seal(_calls(*items), [b"k"] * len(items), 1, ARRIVAL)
    return value


def _comparable(tp: Touchpoint) -> dict[str, Any]:
    fields = msgspec.structs.asdict(tp)
    del fields["event_id"]  # made by whoever builds the touchpoint
    return fields


@settings(max_examples=600, deadline=None)
@given(raw=calls())
def test_an_envelope_holds_only_calls_the_per_event_path_accepts(raw: dict[str, Any]) -> None:
    body = msgspec.json.encode({"batch": [{"messageId": "m-1", **raw}]})
    whole = envelope.decode_batch(body)
    admitted = whole and envelope.admitted(body, whole.batch, ARRIVAL)
    if admitted is None:
        return  # the per-event path decides; nothing to compare
    # What the API's per-event path would read of the same body.
    items = orjson.loads(body)["batch"]
    messages, rejected = service.build_messages(items, call_type=None, **ARRIVAL)
    assert rejected == []
    assert admitted.keys == [key for key, _ in messages]  # the partition it would have had
    ((_, _, sealed),) = envelope.seal(*admitted, 6, ARRIVAL)
    built, failed = envelope.open_envelope(sealed, IdentityConfig())
    assert failed == []
    assert [_comparable(tp) for tp in built] == [
        _comparable(Touchpoint.from_bytes(value)) for _, value in messages
    ]


def test_the_workloads_batches_all_go_whole() -> None:
    work = generate(2_000, 100, seed=7, prefix="whole")
    for body in work.batch_bodies(100):
        whole = envelope.decode_batch(body)
        assert whole is not None
        assert envelope.admitted(body, whole.batch, ARRIVAL) is not None


def test_a_batchs_calls_go_where_the_per_event_path_would_put_them() -> None:
    calls = [
        {"type": "track", "messageId": f"m-{i}", "userId": f"u-{i % 9}", "event": "E"}
        for i in range(40)
    ]
    raws = _calls(*calls)
    keys = _keys(*calls)
    assert keys is not None
    messages, _ = service.build_messages(calls, call_type=None, **ARRIVAL)
    where = {
        tp.message_id: partition_for(key, 4)
        for key, tp in ((k, Touchpoint.from_bytes(v)) for k, v in messages)
    }
    sealed = envelope.seal(raws, keys, 4, ARRIVAL)
    assert 1 < len(sealed) <= 4
    seen: list[int] = []
    for partition, key, value in sealed:
        assert partition == partition_for(key, 4)
        built, _ = envelope.open_envelope(value, IdentityConfig())
        assert {where[tp.message_id] for tp in built} == {partition_for(key, 4)}
        order = [int(tp.message_id[2:]) for tp in built]
        assert order == sorted(order)  # as sent
        seen += order
    assert sorted(seen) == list(range(40))


def test_a_partitions_calls_beyond_an_envelopes_bound_go_in_further_envelopes_in_order() -> None:
    # Two people's carts of about 10 KB a call, 1.2 MB each: too much for one message on a
    # broker at its defaults (1 MB), as one envelope per partition would be.
    cart = [{"sku": f"P-{n}", "name": "Espresso cup", "price": 12.5} for n in range(180)]
    people = ("ada", "grace")  # partitions 5 and 0 of 6
    calls = [
        {"type": "track", "messageId": f"m-{i}", "userId": people[i % 2], "event": "Cart Viewed"}
        | {"properties": {"products": cart}}
        for i in range(240)
    ]
    raws = _calls(*calls)
    keys = _keys(*calls)
    assert keys is not None
    sealed = envelope.seal(raws, keys, 6, ARRIVAL)
    assert len(sealed) >= 5
    sent: dict[int, list[str]] = {}
    for partition, key, value in sealed:
        items = msgspec.json.decode(value, type=envelope.Envelope).items
        assert sum(map(len, items)) <= envelope.ENVELOPE_BYTES
        assert len(value) < 960 * 1024  # a batch of the producer's, alone
        built, failed = envelope.open_envelope(value, IdentityConfig())
        assert failed == []
        assert {tp.user_id for tp in built} == {key.decode()}
        assert partition == partition_for(key, 6)
        sent.setdefault(partition, []).extend(tp.message_id for tp in built)
    assert sent == {
        partition_for(person.encode(), 6): [f"m-{i}" for i in range(240) if i % 2 == p]
        for p, person in enumerate(people)
    }


def test_a_call_longer_as_sent_than_an_event_may_be_travels_compact() -> None:
    # Accepted as the per-event path measures it (compact JSON): pretty-printed, it is
    # larger than an event may be, and would grow an envelope beyond its bound.
    call = {"type": "track", "messageId": "m-1", "userId": "u", "event": "E"}
    call["properties"] = {f"p{n}": n for n in range(2_000)}
    pretty = orjson.dumps(call, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n" + b" " * 8)
    body = b'{"batch": [%s]}' % pretty
    assert len(orjson.dumps(call)) < MAX_EVENT_BYTES < len(pretty)
    whole = envelope.decode_batch(body)
    assert whole is not None
    admitted = envelope.admitted(body, whole.batch, ARRIVAL)
    assert admitted is not None
    (travelling,) = admitted.calls
    assert bytes(travelling) == orjson.dumps(call)
    ((_, _, sealed),) = envelope.seal(*admitted, 6, ARRIVAL)
    (built,), _ = envelope.open_envelope(sealed, IdentityConfig())
    messages, _ = service.build_messages([call], call_type=None, **ARRIVAL)
    assert _comparable(built) == _comparable(Touchpoint.from_bytes(messages[0][1]))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"messageId": None}, "no messageId: the API makes one, once"),
        ({"messageId": ""}, "an empty messageId is replaced by one the API makes"),
        ({"userId": "undefined", "anonymousId": None}, "a blocked id: the call is rejected"),
        ({"type": "track", "event": None}, "a required field missing"),
        ({"timestamp": 1_700_000_000}, "a Unix time: pydantic's parser decides"),
        ({"writeKey": 7}, "a write key that is not text: refused"),
        ({"properties": {"blob": "x" * 33_000}}, "over the 32 KB limit"),
    ],
)
def test_a_batch_goes_per_event_unless_every_call_plainly_passes(
    change: dict[str, Any], why: str
) -> None:
    good = {"type": "track", "messageId": "m-1", "userId": "u-1", "event": "Viewed"}
    assert _keys(good) == [b"u-1"]
    odd = {k: v for k, v in {**good, "messageId": "m-2", **change}.items() if v is not None}
    assert _keys(good, odd) is None, why


def test_remembered_verdicts_on_ids_give_the_first_answers() -> None:
    # Each id's verdict is remembered (by kind): asked again, a batch gets the same answer,
    # and the answer the per-event path gives.
    kept = {"type": "track", "messageId": "m-1", "anonymousId": "null", "userId": 7, "event": "E"}
    refused = {"type": "track", "messageId": "m-2", "anonymousId": "null", "event": "E"}
    for _ in range(2):
        assert _keys(kept) == [b"null"]  # the anonymousId keys the call, usable or not
        assert _keys(refused) is None
        assert _keys({**kept, "userId": "7"}) == [b"null"]  # text: a verdict of its own
    messages, rejected = service.build_messages([kept, refused], call_type=None, **ARRIVAL)
    assert [key for key, _ in messages] == [b"null"]
    assert [r.messageId for r in rejected] == ["m-2"]


@pytest.mark.parametrize(("numbers", "fits"), [(1_500, True), (1_800, False)])
def test_the_size_limit_is_measured_as_the_per_event_path_measures_it(
    numbers: int, fits: bool
) -> None:
    # "1e15" is written back as "1000000000000000.0": 1,500 of them are 7.5 KB as sent and
    # 28.5 KB as the limit measures; 1,800 are 9 KB as sent, 34 KB as measured.
    call: dict[str, Any] = {"type": "track", "messageId": "m", "userId": "u", "event": "E"}
    call["properties"] = {"n": orjson.Fragment(b"[" + b",".join([b"1e15"] * numbers) + b"]")}
    calls = _calls(call)
    assert len(bytes(calls[0])) < 10_000
    assert (service.unstorable(orjson.loads(bytes(calls[0]))) is None) is fits
    assert (_keys(call) is not None) is fits


def test_a_call_nested_deeper_than_can_be_stored_goes_per_event() -> None:
    deep = b"[" * 260 + b"]" * 260
    body = b'{"batch":[{"type":"page","messageId":"m","userId":"u","properties":{"d":%s}}]}' % deep
    whole = envelope.decode_batch(body)
    assert whole is not None
    assert envelope.admitted(body, whole.batch, ARRIVAL) is None
    _, rejected = service.build_messages(orjson.loads(body)["batch"], call_type=None, **ARRIVAL)
    assert "nested too deeply" in rejected[0].errors[0].message


def _nested(depth: int, n: int) -> dict[str, Any]:
    """A page call of about 300 bytes whose properties hold a list ``depth`` levels deep."""
    deep = orjson.Fragment(b"[" * depth + b"]" * depth)
    properties = {"d": deep, "title": "t" * 200}
    return {"type": "page", "messageId": f"m-{n}", "userId": "u", "properties": properties}


@pytest.mark.parametrize("at", [0, 77, 149])
def test_a_deep_call_among_shallow_ones_is_found(at: int) -> None:
    # A body of many blocks: the deep call is found wherever it falls among them.
    items = [_nested(3, n) for n in range(150)]
    body = orjson.dumps({"batch": items})
    assert len(body) > 2 * envelope._BLOCK
    assert envelope._shallow(body, max(len(orjson.dumps(i)) for i in items))
    assert _keys(*items) is not None
    items[at] = _nested(260, at)
    assert _keys(*items) is None


def test_a_body_dense_with_brackets_has_its_calls_counted_one_by_one() -> None:
    # 130 brackets a call, each call far from the depth limit: every two adjacent blocks of
    # the body hold more than 254, and the calls are counted one at a time instead.
    items = [_nested(130, n) for n in range(40)]
    body = orjson.dumps({"batch": items})
    assert not envelope._shallow(body, max(len(orjson.dumps(i)) for i in items))
    assert _keys(*items) is not None
    items[5] = _nested(254, 5)
    assert _keys(*items) is None


def test_a_nul_character_sends_a_batch_per_event_which_refuses_that_call() -> None:
    """Postgres cannot store NUL: the API refuses the call, and says where the NUL is."""
    good = {"type": "track", "messageId": "m-1", "userId": "u-1", "event": "Viewed"}
    nul = {**good, "messageId": "m-2", "properties": {"tags": ["ok", "a\x00"]}}
    assert _keys(good, nul) is None
    messages, rejected = service.build_messages([good, nul], call_type=None, **ARRIVAL)
    assert len(messages) == 1
    assert [(r.index, [e.field for e in r.errors]) for r in rejected] == [
        (1, ["properties.tags.1"])
    ]
    assert "NUL character" in rejected[0].errors[0].message
    # A backslash, then "u0000": written as "\\u0000", no NUL, stored as any text.
    lookalike = {**good, "messageId": "m-3", "event": "\\u0000"}
    assert _keys(lookalike) is None  # conservative: decided per event
    messages, rejected = service.build_messages([lookalike], call_type=None, **ARRIVAL)
    assert (len(messages), rejected) == (1, [])


def test_what_is_nested_deeper_than_python_recurses_is_refused_not_raised() -> None:
    """msgspec raises RecursionError there: the consumer dead-letters such a message."""
    deep = b'{"a": ' * 3_000 + b"1" + b"}" * 3_000
    with pytest.raises(envelope.InvalidEnvelope):
        envelope.open_envelope(
            b'{"envelope": "segment-batch", "context": ' + deep + b"}", IdentityConfig()
        )
    with pytest.raises(InvalidTouchpoint):
        Touchpoint.from_bytes(b'{"schema_version": 1, "properties": ' + deep + b"}")


def test_an_unknown_source_channel_goes_per_event() -> None:
    odd: service.Arrival = {**ARRIVAL, "source": SourceInfo(SOURCE.id, "s", "fax", {})}
    good = {"type": "track", "messageId": "m-1", "userId": "u-1", "event": "Viewed"}
    assert _keys(good, arrival=odd) is None


def test_an_envelope_that_is_not_one_is_refused() -> None:
    with pytest.raises(envelope.InvalidEnvelope):
        envelope.open_envelope(b'{"envelope":"segment-batch","items":7}', IdentityConfig())
    sealed = orjson.loads(_sealed({"type": "page", "messageId": "m", "anonymousId": "a"}))
    with pytest.raises(envelope.InvalidEnvelope, match="unknown channel"):
        envelope.open_envelope(orjson.dumps({**sealed, "channel": "fax"}), IdentityConfig())
    with pytest.raises(envelope.InvalidEnvelope, match="version 2 is newer"):
        envelope.open_envelope(orjson.dumps({**sealed, "version": 2}), IdentityConfig())


def test_a_call_the_pipeline_cannot_build_is_reported_with_its_reason() -> None:
    good = {"type": "track", "messageId": "m-1", "userId": "u-1", "event": "Viewed"}
    blocked = {"type": "track", "messageId": "m-2", "userId": "null", "event": "Viewed"}
    # Only a producer other than the API puts such a call in an envelope.
    built, failed = envelope.open_envelope(_sealed(good, blocked), IdentityConfig())
    assert [tp.message_id for tp in built] == ["m-1"]
    assert [(item, orjson.loads(call)["messageId"]) for item, call, _ in failed] == [(1, "m-2")]
    assert "blocked value" in failed[0][2]


@pytest.fixture
async def per_event_client(
    channel_settings: Settings, db: AsyncEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with batch envelopes turned off."""
    async with asgi_client(
        channel_settings.model_copy(update={"ingest_batch_envelopes": False})
    ) as http:
        yield http


BATCH = {
    "sentAt": "2025-03-01T12:00:02Z",
    "context": {"library": {"name": "analytics-node"}},
    "batch": [
        {
            "type": "identify",
            "messageId": "m-1",
            "userId": 42,
            "traits": {"email": " Ada@Example.COM ", "phone": "333 123 4567"},
            "timestamp": "2025-03-01T12:00:00Z",
        },
        {
            "type": "track",
            "messageId": "m-2",
            "anonymousId": "a-1",
            "event": "Order Completed",
            "properties": {"total": 30.5},
            "context": {"channel": "in_store", "traits": {"crmId": "C-9"}},
            "timestamp": "2025-03-01T12:00:01.5+01:00",
        },
        {
            "type": "alias",
            "messageId": "m-3",
            "userId": "42",
            "previousId": "a-1",
            "originalTimestamp": "2025-03-01 12:00:01",
        },
    ],
}


async def test_the_pipeline_gets_what_the_per_event_path_publishes(
    client: httpx.AsyncClient,
    per_event_client: httpx.AsyncClient,
    make_source: SourceFactory,
    topic: TopicReader,
    channel_settings: Settings,
) -> None:
    # One envelope per partition the calls' keys ("42", "a-1", "42") fall in.
    envelopes = len({partition_for(k, channel_settings.kafka_partitions) for k in (b"42", b"a-1")})
    whole_source, whole_key = await make_source(channel="social")
    each_source, each_key = await make_source(channel="social")
    answer = await client.post("/v1/batch", json=BATCH, headers=basic(whole_key))
    assert answer.json() == {"success": True, "accepted": 3, "rejected": []}
    assert topic.envelopes == []
    whole = sorted(await topic.touchpoints(whole_source.id, 3), key=lambda tp: tp.message_id)
    assert len(topic.envelopes) == envelopes
    answer = await per_event_client.post("/v1/batch", json=BATCH, headers=basic(each_key))
    assert answer.json() == {"success": True, "accepted": 3, "rejected": []}
    each = sorted(await topic.touchpoints(each_source.id, 3), key=lambda tp: tp.message_id)
    assert len(topic.envelopes) == envelopes

    def same(tp: Touchpoint) -> dict[str, Any]:
        # The two requests differ in their source and in when they arrived; occurred_at
        # follows received_at (clock-skew correction), so it is compared through it.
        fields = _comparable(tp)
        fields["occurred_at"] -= tp.received_at
        for name in ("source_id", "received_at"):
            del fields[name]
        return fields

    assert [same(tp) for tp in whole] == [same(tp) for tp in each]
    assert [tp.channel for tp in whole] == ["social", "in_store", "social"]
    assert whole[0].identifiers[1].value == "ada@example.com"


async def test_a_batch_with_a_rejected_call_is_answered_call_by_call(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source()
    batch = {
        "batch": [
            {"type": "track", "messageId": "m-1", "userId": "u", "event": "Viewed"},
            {"type": "track", "messageId": "m-2", "userId": "undefined", "event": "Viewed"},
        ]
    }
    answer = await client.post("/v1/batch", json=batch, headers=basic(key))
    body = answer.json()
    assert body["accepted"] == 1
    assert [r["messageId"] for r in body["rejected"]] == ["m-2"]
    (published,) = await topic.touchpoints(source.id, 1)
    assert published.message_id == "m-1"
    assert topic.envelopes == []


async def test_an_envelope_carries_no_write_key(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    # As analytics.js batches (POST {apiHost}/b, text/plain): the write key in the body and
    # again in every call, beside fields Percorso does not read.
    source, key = await make_source()
    metadata = {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}
    batch = {
        "writeKey": key,
        "batch": [
            {"type": "page", "messageId": "m-1", "anonymousId": "a", "name": "Home"},
            {"type": "track", "messageId": "m-2", "anonymousId": "a", "event": "Viewed"},
        ],
        "sentAt": "2026-11-24T10:00:01.000Z",
    }
    for call in batch["batch"]:
        call.update(writeKey=key, integrations={}, _metadata=metadata)
    answer = await client.post(
        "/v1/b", content=orjson.dumps(batch), headers={"Content-Type": "text/plain"}
    )
    assert answer.json() == {"success": True, "accepted": 2, "rejected": []}
    built = await topic.touchpoints(source.id, 2)
    assert sorted(tp.message_id for tp in built) == ["m-1", "m-2"]
    (sealed,) = topic.envelopes  # whole: one envelope, the calls' anonymousId keying both
    assert key.encode() not in sealed
    assert b"_metadata" in sealed  # the rest of each call as sent


def test_ids_beyond_64_bits_go_per_event_which_decides() -> None:
    # msgspec reads such an integer exactly, orjson (the per-event path) as a float.
    call = {"type": "track", "messageId": "m-1", "event": "E"}
    for user_id, kept in ((2**64, False), (-(2**63) - 1, False), (2**63, True)):
        digits = orjson.Fragment(b"%d" % user_id)
        assert _keys({**call, "userId": digits}) is None
        items = orjson.loads(orjson.dumps({"batch": [{**call, "userId": digits}]}))["batch"]
        messages, _ = service.build_messages(items, call_type=None, **ARRIVAL)
        assert bool(messages) is kept
    assert _keys({**call, "userId": 2**63 - 1}) == [b"9223372036854775807"]


def _body(calls: str, context: str = "null") -> bytes:
    return b'{"context": %s, "batch": [%s]}' % (context.encode("latin-1"), calls.encode("latin-1"))


_CALL = '{"type":"track","messageId":"m-1","userId":"u-1","event":"E","properties":%s}'


@pytest.mark.parametrize(
    ("body", "properties", "context"),
    [
        (_body(_CALL % '{"shop":"Caffè"}'), {"shop": "Caff\ufffd"}, {}),
        (_body(_CALL % '{"n":1e400,"m":-1e999}'), {"n": None, "m": None}, {}),
        (_body(_CALL % ('{"n":1%s}' % ("0" * 400))), {"n": None}, {}),
        (_body(_CALL % "{}", '{"big":18446744073709551616}'), {}, {"big": 2.0**64}),
        (_body(_CALL % "{}", '{"till":"Caffè"}'), {}, {"till": "Caff\ufffd"}),
    ],
    ids=["latin-1 text", "beyond a double", "a 401-digit integer", "batch context", "both"],
)
async def test_what_plain_json_decoding_refuses_is_read_alike_on_both_paths(
    client: httpx.AsyncClient,
    per_event_client: httpx.AsyncClient,
    make_source: SourceFactory,
    topic: TopicReader,
    body: bytes,
    properties: dict[str, Any],
    context: dict[str, Any],
) -> None:
    # Envelopes skip over what they do not read: the pipeline reads it as the per-event path
    # does (non-UTF-8 bytes as U+FFFD, numbers beyond a double as null), never dead-letters it.
    for http in (client, per_event_client):
        source, key = await make_source()
        answer = await http.post("/v1/batch", content=body, headers=basic(key))
        assert answer.json() == {"success": True, "accepted": 1, "rejected": []}
        (tp,) = await topic.touchpoints(source.id, 1)
        assert tp.properties == properties
        assert context.items() <= tp.context.items()


@pytest.mark.parametrize(
    ("user_id", "why"),
    [(9007199254740993.0, "number too large to be exact"), (7.5, "not a whole number")],
)
async def test_an_id_sent_as_a_float_is_refused_unless_exact_on_both_paths(
    client: httpx.AsyncClient,
    per_event_client: httpx.AsyncClient,
    make_source: SourceFactory,
    topic: TopicReader,
    user_id: float,
    why: str,
) -> None:
    # pydantic would round 9007199254740993.0 to 9007199254740992: another person's id.
    calls = [
        {"type": "track", "messageId": "m-1", "userId": user_id, "event": "E"},
        {"type": "track", "messageId": "m-2", "userId": 7.0, "event": "E"},
    ]
    for http in (client, per_event_client):
        source, key = await make_source()
        answer = (await http.post("/v1/batch", json={"batch": calls}, headers=basic(key))).json()
        assert answer["accepted"] == 1
        ((rejected, error),) = [(r["messageId"], r["errors"][0]) for r in answer["rejected"]]
        assert rejected == "m-1"
        assert (error["field"], why in error["message"]) == ("userId", True)
        (tp,) = await topic.touchpoints(source.id, 1)
        assert [i.value for i in tp.identifiers] == ["7"]


async def test_a_batch_context_too_deep_to_store_in_each_event_is_refused_on_both_paths(
    client: httpx.AsyncClient,
    per_event_client: httpx.AsyncClient,
    make_source: SourceFactory,
) -> None:
    # 254 levels measure as storable alone; in each event the context sits one level deeper.
    call = '{"type":"track","messageId":"m-1","userId":"u-1","event":"E"}'
    body = _body(call, '{"d":%s}' % ("[" * 253 + "]" * 253))
    for http in (client, per_event_client):
        _, key = await make_source()
        answer = await http.post("/v1/batch", content=body, headers=basic(key))
        assert answer.status_code == 400
        assert answer.headers["content-type"] == "application/problem+json"
        assert "the batch's context cannot be stored" in answer.json()["detail"]


def test_reading_a_batch_leaves_no_cycle_holding_its_body() -> None:
    # An error caught and kept in a frame its traceback holds is a cycle: each request's
    # body stayed alive until the collector ran (+22 MB of API peak RSS in the benchmark).
    bodies = [
        orjson.dumps({"batch": [{"type": "page", "messageId": "m", "anonymousId": "a"}]}),
        _body(_CALL % '{"shop":"Caffè","n":1e400}', '{"till":"Caffè"}'),
    ]
    gc.collect()
    gc.disable()
    try:
        for body in bodies:
            whole = envelope.decode_batch(body)
            assert whole is not None
            assert whole.head()["sentAt"] is None
            assert envelope.admitted(body, whole.batch, ARRIVAL) is not None
            del whole
        assert gc.collect() == 0
    finally:
        gc.enable()
