"""Keyset cursors carry the list they page: one list's cursor on another is a 400 problem,
not a page read from a position it is not; the timeline still reads the untagged cursors it
issued before."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from app.errors import PROBLEM_JSON, InvalidRequest
from app.kit.cursor import (
    NOT_ISSUED,
    OTHER_LIST,
    Paged,
    decode_cursor,
    encode_cursor,
    encode_time_and_id,
    time_and_id,
)
from tests.factories import T0, touchpoint
from tests.helpers import bearer, walk_pages

AT = datetime(2026, 11, 1, 9, 0, 0, 123456, tzinfo=UTC)


def _json(cursor: str) -> Any:
    return orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


def _cursor(position: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


@pytest.mark.parametrize("paged", list(Paged))
def test_a_cursor_reads_back_on_its_own_list_only(paged: Paged) -> None:
    event_id = uuid.uuid4()
    cursor = encode_time_and_id(paged, AT, event_id)
    assert _json(cursor) == [paged.value, AT.isoformat(), str(event_id)]
    assert decode_cursor(cursor, paged, time_and_id) == (AT, event_id)
    for other in Paged:
        if other is not paged:
            with pytest.raises(InvalidRequest) as refused:
                decode_cursor(cursor, other, time_and_id)
            assert refused.value.detail == OTHER_LIST.format(paged.value)
    kinds = encode_cursor(paged, "email", 'a"\x01é@example.com')
    assert decode_cursor(kinds, paged, lambda k, v: (k, v)) == ("email", 'a"\x01é@example.com')


def test_only_the_timeline_reads_untagged_cursors_and_no_tag_but_its_lists() -> None:
    event_id = uuid.uuid4()
    untagged = _cursor([AT.isoformat(), str(event_id)])
    assert decode_cursor(untagged, Paged.TIMELINE, time_and_id) == (AT, event_id)
    unknown_tag = _cursor(["contacts", AT.isoformat(), str(event_id)])
    for paged in Paged:
        if paged is not Paged.TIMELINE:
            with pytest.raises(InvalidRequest) as refused:
                decode_cursor(untagged, paged, time_and_id)
            assert refused.value.detail == NOT_ISSUED
        with pytest.raises(InvalidRequest) as refused:
            decode_cursor(unknown_tag, paged, time_and_id)
        assert refused.value.detail == NOT_ISSUED


async def _lists(handle: Any, source_id: uuid.UUID, client: httpx.AsyncClient, token: str) -> Any:
    """Two customers with two of everything paged (events, stage transitions, identities,
    abandoned carts): each list's URL (and parameters) and the first page's ``next_cursor``
    of one item a page."""
    await handle(
        [
            touchpoint(source_id, user_id="ada", event="Signed Up", at=0),
            touchpoint(source_id, user_id="ada", anonymous_id="a-1", at=600),
            touchpoint(source_id, user_id="ada", event="Product Added", at=1200),
            touchpoint(source_id, user_id="bob", event="Product Added", at=1800),
        ]
    )
    lookup = await client.get(
        "/v1/customers/lookup", params={"kind": "user_id", "value": "ada"}, headers=bearer(token)
    )
    ada = lookup.json()["id"]
    carts = {"since": T0.isoformat(), "as_of": (T0 + timedelta(hours=10)).isoformat()}
    lists = {
        Paged.TIMELINE: (f"/v1/customers/{ada}/timeline", {}),
        Paged.JOURNEY: (f"/v1/customers/{ada}/journey", {}),
        Paged.IDENTITIES: (f"/v1/customers/{ada}/identities", {}),
        Paged.ABANDONED_CARTS: ("/v1/analytics/abandoned-carts", carts),
    }
    cursors = {}
    for paged, (url, params) in lists.items():
        first = await client.get(url, params={**params, "limit": 1}, headers=bearer(token))
        assert first.status_code == 200, (paged, first.text)
        cursors[paged] = first.json()["next_cursor"]
        assert _json(cursors[paged])[0] == paged.value
    return lists, cursors


async def test_every_list_refuses_every_other_lists_cursor(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    lists, cursors = await _lists(handle, source_id, app_client, read_token)
    for paged, (url, params) in lists.items():
        before = await app_client.get(url, params=params, headers=bearer(read_token))
        own = await app_client.get(
            url, params={**params, "limit": 1, "cursor": cursors[paged]}, headers=bearer(read_token)
        )
        assert own.status_code == 200, (paged, own.text)
        for other, cursor in cursors.items():
            if other is paged:
                continue
            response = await app_client.get(
                url, params={**params, "cursor": cursor}, headers=bearer(read_token)
            )
            assert response.status_code == 400, (paged, other, response.text)
            assert response.headers["content-type"] == PROBLEM_JSON
            assert response.json()["type"].endswith("/invalid-request")
            assert response.json()["detail"] == OTHER_LIST.format(other.value)
        after = await app_client.get(url, params=params, headers=bearer(read_token))
        assert after.json() == before.json()


async def test_the_timeline_pages_on_with_the_untagged_cursors_it_issued_before(
    app_client: httpx.AsyncClient, read_token: str, handle: Any, source_id: uuid.UUID
) -> None:
    """A cursor as the timeline wrote them before they were tagged (the time and the id)
    still pages the timeline, to the same items; on any other list it is no cursor of
    theirs (an untagged time and id would be read as a journey's or a cart's position)."""
    lists, _ = await _lists(handle, source_id, app_client, read_token)
    timeline, _ = lists[Paged.TIMELINE]
    tagged = await walk_pages(app_client, read_token, timeline, limit=1)
    assert len(tagged) == 3  # three events, one a page
    untagged = [_cursor(_json(page["next_cursor"])[1:]) for page in tagged[:-1]]
    assert _json(untagged[0]) == _json(tagged[0]["next_cursor"])[1:]
    for cursor, page in zip(untagged, tagged[1:], strict=True):
        response = await app_client.get(
            timeline, params={"cursor": cursor, "limit": 1}, headers=bearer(read_token)
        )
        assert response.status_code == 200, response.text
        assert response.json() == page
    for paged, (url, params) in lists.items():
        if paged is Paged.TIMELINE:
            continue
        response = await app_client.get(
            url, params={**params, "cursor": untagged[0]}, headers=bearer(read_token)
        )
        assert response.status_code == 400, (paged, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["detail"] == NOT_ISSUED
