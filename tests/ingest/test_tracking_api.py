"""The Segment-compatible tracking API over HTTP, checked on what reaches the broker."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers import basic
from tests.ingest.fixtures import SourceFactory, TopicReader

CALLS: dict[str, dict[str, Any]] = {
    "track": {"event": "Product Viewed"},
    "page": {"name": "Home"},
    "screen": {"name": "Cart"},
    "identify": {"traits": {"email": "ada@example.com"}},
    "group": {"groupId": "acme"},
    "alias": {"previousId": "anon-1"},
}
SHORT = {"track": "t", "page": "p", "screen": "s", "identify": "i", "group": "g", "alias": "a"}


async def test_every_call_type_is_accepted_on_its_full_and_short_path(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    """The path is the call's type: a `type` in the body is ignored, as the document says."""
    source, key = await make_source()
    sent = []
    for call, body in CALLS.items():
        for path in (call, SHORT[call]):
            response = await client.post(
                f"/v1/{path}", json={"userId": "ada", "type": "bogus", **body}, headers=basic(key)
            )
            assert response.status_code == 200, response.text
            assert response.json() == {"success": True, "accepted": 1, "rejected": []}
            sent.append(call)
    touchpoints = await topic.touchpoints(source.id, len(sent))
    assert sorted(tp.type for tp in touchpoints) == sorted(sent)
    assert all(tp.channel == "web" for tp in touchpoints)


async def test_write_key_by_basic_header_or_body_and_nothing_else(
    client: httpx.AsyncClient, make_source: SourceFactory
) -> None:
    _, key = await make_source()
    event = {"userId": "ada", "event": "X"}
    assert (await client.post("/v1/track", json=event, headers=basic(key))).status_code == 200
    by_header = await client.post("/v1/track", json=event, headers={"x-write-key": key})
    assert by_header.status_code == 200
    by_body = await client.post("/v1/track", json={**event, "writeKey": key})
    assert by_body.status_code == 200
    batch_body = await client.post(
        "/v1/batch", json={"batch": [{**event, "type": "track"}], "writeKey": key}
    )
    assert batch_body.status_code == 200
    missing = await client.post("/v1/track", json=event)
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await client.post("/v1/track", json=event, headers=basic("pw_not-a-key"))
    assert wrong.status_code == 401


async def test_text_plain_and_gzip_bodies_are_read(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source()
    beacon = orjson.dumps({"writeKey": key, "anonymousId": "b-1", "event": "Beacon"})
    response = await client.post(
        "/v1/t", content=beacon, headers={"content-type": "text/plain;charset=UTF-8"}
    )
    assert response.status_code == 200, response.text
    zipped = gzip.compress(
        orjson.dumps({"batch": [{"type": "track", "userId": "u", "event": "Zipped"}]})
    )
    response = await client.post(
        "/v1/batch",
        content=zipped,
        headers={**basic(key), "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    events = {tp.event for tp in await topic.touchpoints(source.id, 2)}
    assert events == {"Beacon", "Zipped"}
    broken = await client.post(
        "/v1/track",
        content=b"not gzip",
        headers={**basic(key), "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert broken.status_code == 400
    xml = await client.post(
        "/v1/track", content=b"<x/>", headers={**basic(key), "content-type": "application/xml"}
    )
    assert xml.status_code == 415


async def test_size_and_count_limits_answer_400(
    client: httpx.AsyncClient, make_source: SourceFactory
) -> None:
    _, key = await make_source()
    big = {"userId": "ada", "event": "Big", "properties": {"blob": "x" * 33_000}}
    assert (await client.post("/v1/track", json=big, headers=basic(key))).status_code == 400
    too_many = {"batch": [{"type": "track", "userId": "u", "event": "E"}] * 2_501}
    response = await client.post("/v1/batch", json=too_many, headers=basic(key))
    assert response.status_code == 400
    assert "2500" in response.json()["detail"]
    heavy = {
        "batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"p": "y" * 30_000}}]
        * 150
    }
    response = await client.post("/v1/batch", json=heavy, headers=basic(key))
    assert response.status_code == 400
    assert "4224 KB" in response.json()["detail"]


async def test_a_batch_answers_per_event_verdicts_and_succeeds_when_any_event_was_accepted(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source()
    batch = [
        {"type": "track", "userId": "ada", "event": "Good"},
        {"type": "track", "event": "No one", "messageId": "m-2"},
        {"type": "track", "userId": "ada", "event": "Huge", "properties": {"p": "z" * 33_000}},
        {"type": "track", "userId": "ada", "event": "Long id", "messageId": "m" * 101},
        {"type": "track", "userId": "ada", "messageId": "m-5"},
    ]
    response = await client.post("/v1/batch", json={"batch": batch}, headers=basic(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 4]
    assert body["rejected"][0]["messageId"] == "m-2"
    assert "userId or anonymousId" in body["rejected"][0]["errors"][0]["message"]
    assert "32 KB" in body["rejected"][1]["errors"][0]["message"]
    assert body["rejected"][2]["errors"][0]["field"] == "messageId"
    (touchpoint,) = await topic.touchpoints(source.id, 1)
    assert touchpoint.event == "Good"
    assert touchpoint.message_id  # generated when missing
    none_valid = await client.post("/v1/batch", json={"batch": batch[1:2]}, headers=basic(key))
    assert none_valid.status_code == 400
    assert none_valid.json()["errors"][0]["index"] == 0


async def test_a_batch_of_4_mb_is_accepted_whole_or_call_by_call(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    # As rudder-sdk-python batches: 130 calls of 30 KB, 3.9 MB, one person's.
    calls = [
        {"type": "track", "messageId": f"m-{n:03}", "userId": "ada", "event": "Cart Viewed"}
        | {"properties": {"note": "y" * 30_000}}
        for n in range(130)
    ]
    odd = {"type": "track", "messageId": "odd", "userId": "ada"}  # no event name
    sent = [f"m-{n:03}" for n in range(130)]
    for batch, path in ((calls, "whole"), ([*calls[:65], odd, *calls[65:]], "call by call")):
        source, key = await make_source()
        response = await client.post("/v1/batch", json={"batch": batch}, headers=basic(key))
        assert response.status_code == 200, path
        assert response.json()["accepted"] == 130, path
        arrived = await topic.touchpoints(source.id, 130)
        assert [tp.message_id for tp in arrived] == sent, path  # in order, on one partition
    assert [r["index"] for r in response.json()["rejected"]] == [65]
    # Whole: in envelopes a broker at its defaults takes (1 MB), not one of 3.9 MB.
    assert len(topic.envelopes) > 1
    assert max(map(len, topic.envelopes)) < 1_000_000


async def test_message_id_up_to_100_characters_is_kept(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source()
    event = {"userId": "ada", "event": "E", "messageId": "m" * 100}
    assert (await client.post("/v1/track", json=event, headers=basic(key))).status_code == 200
    (touchpoint,) = await topic.touchpoints(source.id, 1)
    assert touchpoint.message_id == "m" * 100


async def test_event_time_is_corrected_for_client_clock_skew_and_far_future_is_clamped(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source()
    # The device clock runs two hours fast: it says it sent at now+2h an event of now+2h-5min.
    device_now = datetime.now(UTC) + timedelta(hours=2)
    skewed = {
        "userId": "ada",
        "event": "Skewed",
        "timestamp": (device_now - timedelta(minutes=5)).isoformat(),
        "sentAt": device_now.isoformat(),
    }
    future = {"userId": "ada", "event": "Future", "timestamp": "2999-01-01T00:00:00Z"}
    historical = {"userId": "ada", "event": "Old", "originalTimestamp": "2024-03-01T09:00:00Z"}
    # Corrected, it would fall before year 1 (Python cannot even represent it).
    beyond = {
        "userId": "ada",
        "event": "Beyond",
        "timestamp": "0001-01-01T00:00:00Z",
        "sentAt": "9999-12-31T00:00:00Z",
    }
    for body in (skewed, future, historical, beyond):
        assert (await client.post("/v1/track", json=body, headers=basic(key))).status_code == 200
    by_event = {tp.event: tp for tp in await topic.touchpoints(source.id, 4)}
    corrected = by_event["Skewed"]
    expected = corrected.received_at - timedelta(minutes=5)
    assert abs(corrected.occurred_at - expected) < timedelta(seconds=1)
    assert "clock_skew_corrected" in corrected.flags
    clamped = by_event["Future"]
    assert clamped.occurred_at == clamped.received_at
    assert "timestamp_clamped" in clamped.flags
    assert by_event["Old"].occurred_at == datetime(2024, 3, 1, 9, tzinfo=UTC)
    beyond_stored = by_event["Beyond"]
    assert beyond_stored.occurred_at == beyond_stored.received_at
    assert beyond_stored.flags == ["timestamp_clamped"]


async def test_event_times_are_kept_in_utc_whatever_offset_they_were_sent_with(
    client: httpx.AsyncClient,
    make_source: SourceFactory,
    topic: TopicReader,
    handle: Any,
) -> None:
    """ISO 8601 allows offsets to ±23:59, PostgreSQL's timestamptz to ±15:59: an event sent
    at -23:30 was accepted, then refused by the pipeline's statements and dead-lettered."""
    source, key = await make_source()
    times = {"Far West": "2026-11-01T10:00:00-23:30", "Rome": "2026-11-01T10:00:00+01:00"}
    for name, at in times.items():
        body = {"userId": "ada", "event": name, "timestamp": at}
        assert (await client.post("/v1/track", json=body, headers=basic(key))).status_code == 200
    by_event = {tp.event: tp for tp in await topic.touchpoints(source.id, 2)}
    for name, at in times.items():
        occurred_at = by_event[name].occurred_at
        assert occurred_at == datetime.fromisoformat(at)  # the same instant
        assert occurred_at.tzinfo is UTC
    # Before year 1 once in UTC: clamped, as a time corrected past year 1 is.
    early = {"userId": "ada", "event": "Early", "timestamp": "0001-01-01T00:30:00+01:00"}
    assert (await client.post("/v1/track", json=early, headers=basic(key))).status_code == 200
    (clamped,) = [tp for tp in await topic.touchpoints(source.id, 3) if tp.event == "Early"]
    assert clamped.flags == ["timestamp_clamped"]
    outcome = await handle(list(by_event.values()))
    assert (outcome.stored, outcome.dead_letters) == (2, [])


async def test_event_times_are_rfc_3339_text_or_unix_times_as_documented(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    """Segment's libraries send RFC 3339 text; a Unix time (seconds, or milliseconds) is
    taken too, and the OpenAPI document says both."""
    source, key = await make_source()
    sent = {"Text": "2023-11-14T22:13:20Z", "Seconds": 1_700_000_000, "Millis": 1_700_000_000_000}
    for name, at in sent.items():
        body = {"userId": "ada", "event": name, "timestamp": at}
        assert (await client.post("/v1/track", json=body, headers=basic(key))).status_code == 200
    by_event = {tp.event: tp.occurred_at for tp in await topic.touchpoints(source.id, 3)}
    assert by_event == dict.fromkeys(sent, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC))
    document = (await client.get("/openapi.json")).json()
    schema = document["paths"]["/v1/track"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["schema"]["properties"]["timestamp"]["anyOf"] == [
        {"type": "string", "format": "date-time"},
        {"type": "number", "description": "Unix time, in seconds or milliseconds"},
        {"type": "null"},
    ]


async def test_a_batch_sent_at_corrects_every_event(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source()
    device_now = datetime.now(UTC) - timedelta(days=1)  # clock a day behind
    batch = {
        "batch": [
            {
                "type": "track",
                "userId": "u",
                "event": "E",
                "timestamp": (device_now - timedelta(seconds=30)).isoformat(),
            }
        ],
        "sentAt": device_now.isoformat(),
    }
    # The short path, and the one Segment's classic Android and iOS libraries post to.
    for path in ("/v1/b", "/v1/import"):
        assert (await client.post(path, json=batch, headers=basic(key))).status_code == 200
    for tp in await topic.touchpoints(source.id, 2):
        assert abs(tp.occurred_at - (tp.received_at - timedelta(seconds=30))) < timedelta(seconds=1)


async def test_channel_is_the_sources_unless_context_channel_overrides(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source(channel="social")
    for context in ({}, {"channel": "in_store"}, {"channel": "browser"}):
        body = {"userId": "ada", "event": "E", "context": context}
        assert (await client.post("/v1/track", json=body, headers=basic(key))).status_code == 200
    touchpoints = await topic.touchpoints(source.id, 3)
    assert sorted(tp.channel.value for tp in touchpoints) == ["in_store", "social", "social"]
    unknown = [tp for tp in touchpoints if tp.context.get("channel") == "browser"]
    assert unknown[0].flags[-1] == "unknown_channel"


async def test_a_screen_named_in_event_as_rudderstacks_mobile_sdks_send_it_keeps_its_name(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    """RudderStack's Android and iOS SDKs send a screen's name in `event` (and again in
    `properties.name`), never in `name`. Alone, or in a batch that goes whole (an envelope)."""
    source, key = await make_source(channel="mobile")
    screen = {
        "type": "screen",
        "anonymousId": "device-1",
        "event": "MainActivity",
        "properties": {"name": "MainActivity", "automatic": True},
        "channel": "mobile",
    }
    single = await client.post("/v1/screen", json=screen, headers=basic(key))
    assert single.status_code == 200, single.text
    batch = {
        "batch": [{**screen, "messageId": "m-1"}, {**screen, "name": "Cart", "messageId": "m-2"}]
    }
    assert (await client.post("/v1/batch", json=batch, headers=basic(key))).status_code == 200
    touchpoints = await topic.touchpoints(source.id, 3)
    assert sorted(tp.event or "" for tp in touchpoints) == ["Cart", "MainActivity", "MainActivity"]
    assert len(topic.envelopes) == 1


async def test_a_name_over_200_characters_is_cut_and_flagged_not_refused(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    """A page named after its title, or an event named after a URL, can be long: Segment and
    RudderStack keep such an event, and so does Percorso, its name cut to 200 characters and
    flagged. A category is a property, kept whole. Alone, or in a batch that goes whole."""
    source, key = await make_source()
    long = "Checkout " + "é" * 300
    single = {"userId": "ada", "event": long}
    answer = await client.post("/v1/track", json=single, headers=basic(key))
    assert answer.json() == {"success": True, "accepted": 1, "rejected": []}
    batch = [
        {"type": "page", "userId": "ada", "name": long, "category": long, "messageId": "m-1"},
        {"type": "screen", "userId": "ada", "event": long, "messageId": "m-2"},
        {"type": "track", "userId": "ada", "event": "x" * 200, "messageId": "m-3"},
    ]
    answer = await client.post("/v1/batch", json={"batch": batch}, headers=basic(key))
    assert answer.json() == {"success": True, "accepted": 3, "rejected": []}
    touchpoints = {tp.message_id: tp for tp in await topic.touchpoints(source.id, 4)}
    assert len(topic.envelopes) == 1
    exact = touchpoints.pop("m-3")
    assert (exact.event, exact.flags) == ("x" * 200, [])
    assert [(tp.event, tp.flags[-1]) for tp in touchpoints.values()] == [
        (long[:200], "name_truncated")
    ] * 3
    assert touchpoints["m-1"].properties == {"category": long}


async def test_alias_previous_id_becomes_an_identifier(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source()
    body = {"userId": "ada", "previousId": "anon-42"}
    assert (await client.post("/v1/alias", json=body, headers=basic(key))).status_code == 200
    no_user = await client.post(
        "/v1/alias", json={"anonymousId": "x", "previousId": "y"}, headers=basic(key)
    )
    assert no_user.status_code == 400
    (tp,) = await topic.touchpoints(source.id, 1)
    assert [(i.kind, i.value) for i in tp.identifiers] == [
        ("user_id", "ada"),
        ("anonymous_id", "anon-42"),
    ]


async def test_server_fills_client_ip_and_user_agent_unless_sent(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source()
    headers = {**basic(key), "user-agent": "TestBrowser/1.0", "x-forwarded-for": "198.51.100.9"}
    await client.post("/v1/track", json={"userId": "a", "event": "Auto"}, headers=headers)
    await client.post(
        "/v1/track",
        json={"userId": "a", "event": "Given", "context": {"ip": "192.0.2.1"}},
        headers=headers,
    )
    by_event = {tp.event: tp for tp in await topic.touchpoints(source.id, 2)}
    # No trusted proxy configured: X-Forwarded-For is not believed.
    assert by_event["Auto"].context["ip"] == "127.0.0.1"
    assert by_event["Auto"].context["userAgent"] == "TestBrowser/1.0"
    assert by_event["Given"].context["ip"] == "192.0.2.1"


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
async def test_malformed_bodies_are_400_never_500(
    client: httpx.AsyncClient, make_source: SourceFactory, path: str
) -> None:
    _, key = await make_source()
    for content in (b"", b" \r\n\t", b"{", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"batch": 3}'):
        response = await client.post(
            path, content=content, headers={**basic(key), "content-type": "application/json"}
        )
        assert response.status_code == 400, (content, response.text)
        if not content.strip():
            assert response.json()["detail"] == "the request body is empty"


async def test_a_body_sent_in_chunks_is_read_whole(
    client: httpx.AsyncClient, make_source: SourceFactory
) -> None:
    _, key = await make_source()
    body = orjson.dumps({"type": "track", "userId": "u-1", "event": "Chunked"})

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    response = await client.post(
        "/v1/track", content=chunks(), headers={**basic(key), "content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1


async def test_rudderstack_beacon_batches_carry_the_write_key_in_the_query(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    source, key = await make_source()
    # As RudderStack's SDK sends a batch with navigator.sendBeacon: text/plain, no header.
    call = {"type": "track", "anonymousId": "b-1", "event": "Left Page", "messageId": "m-1"}
    beacon = orjson.dumps({"batch": [call], "sentAt": datetime.now(UTC).isoformat()})
    text = {"content-type": "text/plain;charset=UTF-8"}
    sent = await client.post(
        "/beacon/v1/batch", params={"writeKey": key}, content=beacon, headers=text
    )
    assert sent.status_code == 200, sent.text
    (tp,) = await topic.touchpoints(source.id, 1)
    assert tp.event == "Left Page"
    assert (await client.post("/beacon/v1/batch", content=beacon, headers=text)).status_code == 401
    # Nowhere else is a key in the URL read.
    elsewhere = await client.post(
        "/v1/batch", params={"writeKey": key}, content=beacon, headers=text
    )
    assert elsewhere.status_code == 401
