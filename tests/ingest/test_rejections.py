"""Each bad input of the tracking API: the right status, a problem+json body, and nothing
reaches the broker (so nothing can be stored)."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import orjson
import pytest

from app.errors import PROBLEM_JSON
from tests.helpers import basic
from tests.ingest.fixtures import SourceFactory, TopicReader

BIG = {"userId": "u", "event": "Big", "properties": {"blob": "x" * 33_000}}

CASES: dict[str, tuple[str, Any, int]] = {
    # name: (path, body (bytes: sent as is), expected status)
    "bad JSON": ("/v1/track", b'{"userId": "u", "event": ', 400),
    "missing userId and anonymousId": ("/v1/track", {"event": "Product Viewed"}, 400),
    "blocked ids only": (
        "/v1/track",
        {"userId": "undefined", "anonymousId": "null", "event": "E"},
        400,
    ),
    "track without an event name": ("/v1/track", {"userId": "u"}, 400),
    "track with a blank event name": ("/v1/track", {"userId": "u", "event": "  "}, 400),
    "event over 32 KB": ("/v1/track", BIG, 400),
    "event over 32 KB in a batch": ("/v1/batch", {"batch": [{"type": "track", **BIG}]}, 400),
    "batch over 2,500 events": (
        "/v1/batch",
        {"batch": [{"type": "track", "userId": "u", "event": "E"}] * 2_501},
        400,
    ),
    "batch over 4,224 KB": (
        "/v1/batch",
        {
            "batch": [
                {"type": "track", "userId": "u", "event": "E", "properties": {"p": "y" * 30_000}}
            ]
            * 150
        },
        400,
    ),
    "batch over 4,224 KB once unzipped": (
        "/v1/batch",
        gzip.compress(
            orjson.dumps(
                {
                    "batch": [
                        {
                            "type": "track",
                            "userId": "u",
                            "event": "E",
                            "properties": {"p": "y" * 1_900},
                        }
                    ]
                    * 2_400
                }
            )
        ),
        400,
    ),
    "batch item with a null type": (
        "/v1/batch",
        {"batch": [{"type": None, "userId": "u", "event": "E"}]},
        400,
    ),
    # pydantic would read them as 1 and 0: every such call one person, "0" or "1".
    "userId false": ("/v1/track", {"userId": False, "event": "E"}, 400),
    "anonymousId true in a batch": (
        "/v1/batch",
        {"batch": [{"type": "page", "anonymousId": True, "name": "Home"}]},
        400,
    ),
    "alias from previousId false": ("/v1/alias", {"previousId": False, "userId": "u"}, 400),
    # Postgres text and jsonb cannot hold NUL: the database would refuse the event later.
    "NUL in an event name": ("/v1/track", {"userId": "u", "event": "a\x00b"}, 400),
    "NUL in a property name in a batch": (
        "/v1/batch",
        {"batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"k\x00": 1}}]},
        400,
    ),
    "NUL in a batch's context, which every event gets": (
        "/v1/batch",
        {"batch": [{"type": "track", "userId": "u", "event": "E"}], "context": {"k": "\x00"}},
        400,
    ),
    "NUL deep in a batch's context": (
        "/v1/batch",
        b'{"batch": [{"type": "track", "userId": "u", "event": "E"}], "context": '
        + b'{"a": ' * 3_000
        + b'"\\u0000"'
        + b"}" * 3_001,
        400,
    ),
    # Deeper than Python recurses (msgspec raised RecursionError: a 500), and deeper than
    # orjson writes (every event would have been dead-lettered).
    "properties nested 3,000 deep in a batch": (
        "/v1/batch",
        b'{"batch": [{"type": "track", "userId": "u", "event": "E", "properties": '
        + b'{"a": ' * 3_000
        + b"1"
        + b"}" * 3_002
        + b"]}",
        400,
    ),
    "a batch's context nested 300 deep": (
        "/v1/batch",
        b'{"batch": [{"type": "track", "userId": "u", "event": "E"}], "context": '
        + b'{"a": ' * 300
        + b"1"
        + b"}" * 301,
        400,
    ),
    "messageId over 100 characters": (
        "/v1/track",
        {"userId": "u", "event": "E", "messageId": "m" * 101},
        400,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_is_a_problem_and_nothing_is_published(
    case: str, client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    path, body, status = CASES[case]
    source, key = await make_source()
    headers = {**basic(key), "content-type": "application/json"}
    if case.endswith("unzipped"):
        headers["content-encoding"] = "gzip"
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await client.post(path, content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith("https://percorso.dev/problems/")
    assert problem["detail"]

    sentinel = await client.post(
        "/v1/track", json={"userId": "sentinel", "event": "After"}, headers=basic(key)
    )
    assert sentinel.status_code == 200
    published = await topic.touchpoints(source.id, 1)
    assert [tp.user_id for tp in published] == ["sentinel"]
    assert [tp.user_id for tp in topic.seen if tp.source_id == source.id] == ["sentinel"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Basic bm90LWEta2V5Og=="}, 401),  # "not-a-key:"
        ({"authorization": "Basic %%%"}, 401),
        ({"x-write-key": "pw_wrong"}, 401),
    ],
)
async def test_missing_or_wrong_write_keys_are_401_problems(
    client: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    response = await client.post("/v1/track", json={"userId": "u", "event": "E"}, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_basic_header_that_is_not_ascii_is_as_malformed_as_any(
    client: httpx.AsyncClient, make_source: SourceFactory, topic: TopicReader
) -> None:
    """A byte beyond ASCII in an `Authorization: Basic` header is no write key: the calls
    that take one answer as for any malformed header, the pixel with its GIF."""
    source, key = await make_source()
    not_ascii = {"authorization": b"Basic \xe9"}
    track = await client.post("/v1/track", json={"userId": "u", "event": "E"}, headers=not_ascii)
    assert track.status_code == 401
    assert track.headers["content-type"] == PROBLEM_JSON
    assert track.json()["detail"] == "send the source's write key as the HTTP Basic user name"
    pixel = await client.get(
        "/v1/pixel/track", params={"userId": "u", "event": "E"}, headers=not_ascii
    )
    assert pixel.status_code == 200
    assert pixel.headers["content-type"] == "image/gif"
    assert pixel.headers["x-percorso-verdict"].startswith("unauthorized: ")
    config = await client.get("/sourceConfig/", headers=not_ascii)
    assert config.status_code == 404
    assert config.headers["content-type"] == PROBLEM_JSON
    assert config.json()["detail"] == "send the source's write key"

    sentinel = await client.post(
        "/v1/track", json={"userId": "sentinel", "event": "After"}, headers=basic(key)
    )
    assert sentinel.status_code == 200
    await topic.touchpoints(source.id, 1)
    assert [tp.user_id for tp in topic.seen if tp.source_id == source.id] == ["sentinel"]
