"""Query parameters read as one model (app.kit.query): what FastAPI would have read, the
same 422 problems, and the same documentation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import Field

from app.errors import install_error_handlers
from app.kit.query import QueryModel, parameters
from app.touchpoint import Channel


class Params(QueryModel):
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=10, description="Where the page starts.")
    channel: list[Channel] | None = None
    type: list[Literal["track", "page"]] | None = Field(None, max_length=2)
    since: datetime | None = None


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/things", openapi_extra=parameters(Params))
    async def things(params: Annotated[Params, Depends(Params.of)]) -> dict[str, Any]:
        return params.model_dump(mode="json")

    return app


@pytest.fixture
async def client() -> Any:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_lists_take_every_occurrence_others_the_last_and_unknown_ones_are_ignored(
    client: httpx.AsyncClient,
) -> None:
    query = (
        "limit=7&limit=9&channel=web&channel=email&type=page"
        "&since=2026-11-01T09:00:00%2B02:00&whatever=1"
    )
    answer = await client.get(f"/things?{query}")
    assert answer.status_code == 200
    assert answer.json() == {
        "limit": 9,
        "cursor": None,
        "channel": ["web", "email"],
        "type": ["page"],
        "since": "2026-11-01T09:00:00+02:00",
    }
    assert datetime.fromisoformat(answer.json()["since"]) == datetime(2026, 11, 1, 7, tzinfo=UTC)
    defaults = await client.get("/things")
    assert defaults.json() == {
        "limit": 50,
        "cursor": None,
        "channel": None,
        "type": None,
        "since": None,
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "query.limit"),
        ("limit=ten", "query.limit"),
        ("limit=", "query.limit"),
        ("cursor=0123456789a", "query.cursor"),
        ("channel=web&channel=fax", "query.channel.1"),
        ("type=track&type=page&type=track", "query.type"),
        ("since=yesterday", "query.since"),
    ],
)
async def test_an_invalid_parameter_is_a_422_problem_naming_it(
    client: httpx.AsyncClient, query: str, field: str
) -> None:
    answer = await client.get(f"/things?{query}")
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["type"].endswith("/validation-failed")
    assert [e["field"] for e in problem["errors"]] == [field]


def test_the_parameters_are_documented_as_fastapi_documents_them() -> None:
    documented = {p["name"]: p for p in _app().openapi()["paths"]["/things"]["get"]["parameters"]}
    assert list(documented) == ["limit", "cursor", "channel", "type", "since"]
    assert all(p["in"] == "query" and p["required"] is False for p in documented.values())
    assert documented["limit"]["schema"] == {
        "default": 50,
        "maximum": 500,
        "minimum": 1,
        "title": "Limit",
        "type": "integer",
    }
    assert documented["cursor"]["description"] == "Where the page starts."
    # An enum stands in the parameter itself: the document has no $defs for it.
    channel = documented["channel"]["schema"]["anyOf"][0]
    assert channel["type"] == "array"
    assert channel["items"]["enum"] == [c.value for c in Channel]
    assert documented["type"]["schema"]["anyOf"][0]["maxItems"] == 2
