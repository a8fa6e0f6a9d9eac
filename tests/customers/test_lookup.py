"""The lookup by identifier: `POST /v1/customers/lookup` takes it in the body, out of the URLs
that access logs keep, and answers as `GET /v1/customers/lookup?kind=&value=` does."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from app.errors import PROBLEM_JSON
from tests.factories import touchpoint
from tests.helpers import basic, bearer

URL = "/v1/customers/lookup"


async def test_the_lookup_in_the_body_answers_as_the_one_in_the_url(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    await handle(
        [
            touchpoint(
                source_id,
                user_id="u-42",
                extra_ids=[("email", "ada@example.com"), ("loyalty_card", "LC-9")],
            )
        ]
    )
    found = 0
    for kind, value in (
        ("email", "  ADA@example.COM "),  # normalised as events' are
        ("Loyalty Card", "LC-9"),
        ("userId", "u-42"),
        ("email", "nobody@example.com"),  # nobody's: 404
        ("email", "not-an-email"),  # never anyone's: 404 too
        ("a\x00b", "x"),
    ):
        in_url = await app_client.get(
            URL, params={"kind": kind, "value": value}, headers=bearer(read_token)
        )
        in_body = await app_client.post(
            URL, json={"kind": kind, "value": value}, headers=bearer(read_token)
        )
        assert in_body.status_code == in_url.status_code, (kind, value, in_body.text)
        assert in_body.headers["content-type"] == in_url.headers["content-type"]
        assert in_body.json() == in_url.json()
        if in_body.status_code == 200:
            found += 1
            assert in_body.json()["identity_count"] == 3
        else:
            assert in_body.status_code == 404, in_body.text
    assert found == 3


async def test_a_body_that_is_not_one_identifier_is_a_client_error(
    app_client: httpx.AsyncClient, read_token: str, write_key: str
) -> None:
    json_type = {**bearer(read_token), "content-type": "application/json"}
    for body, field in (
        ({"kind": "email"}, "value"),
        ({"value": "ada@example.com"}, "kind"),
        ({"kind": "email", "value": ""}, "value"),
        ({"kind": "email", "value": 5}, "value"),
        ({"kind": "k" * 65, "value": "x"}, "kind"),
        ({"kind": "email", "value": "x" * 256}, "value"),
        ({"kind": "email", "value": "ada@example.com", "extra": 1}, "extra"),
        (["email", "ada@example.com"], None),
    ):
        response = await app_client.post(URL, json=body, headers=bearer(read_token))
        assert response.status_code == 400, (body, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["type"].endswith("/invalid-request")
        assert response.json()["errors"][0]["field"] == field, body
    for content, detail in (
        (b'{"kind": "email",', "not valid JSON"),
        (b"", "empty"),
        (b'{"kind": "email", "value": "' + b"a" * 5000 + b'"}', "exceeds 4 KB"),
    ):
        response = await app_client.post(URL, content=content, headers=json_type)
        assert response.status_code == 400, (content[:20], response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        assert detail in response.json()["detail"], response.text
    form = await app_client.post(
        URL, data={"kind": "email", "value": "ada@example.com"}, headers=bearer(read_token)
    )
    assert form.status_code == 415
    assert form.headers["content-type"] == PROBLEM_JSON

    body = {"kind": "email", "value": "ada@example.com"}
    missing = await app_client.post(URL, json=body)
    assert missing.status_code == 401
    assert missing.headers["content-type"] == PROBLEM_JSON
    assert (await app_client.post(URL, json=body, headers=bearer(write_key))).status_code == 403
    assert (await app_client.post(URL, json=body, headers=basic(write_key))).status_code == 401
