"""Customers with known journeys, put in the database through the pipeline's batch handler
(the `handle` fixture, default model), for the analytics tests."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx

from app.touchpoint import MACHINE_FLAG, Touchpoint
from tests.factories import touchpoint
from tests.helpers import bearer


def page(source_id: uuid.UUID, at: int | datetime, **ids: Any) -> Touchpoint:
    """A page view: a first touch places a new customer in awareness, later ones move no one."""
    return touchpoint(source_id, type="page", event="Home", at=at, **ids)


def machine(tp: Touchpoint) -> Touchpoint:
    """``tp`` flagged as machine activity (an email open by a privacy proxy)."""
    tp.flags = [*tp.flags, MACHINE_FLAG]
    return tp


async def get(client: httpx.AsyncClient, token: str, path: str, **params: Any) -> Any:
    """The JSON of a 200 answer of ``/v1/analytics/<path>``."""
    response = await client.get(f"/v1/analytics/{path}", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


async def refused(client: httpx.AsyncClient, token: str, path: str, **params: Any) -> Any:
    """The problem of a 422 answer, as ``{field: message}``."""
    response = await client.get(f"/v1/analytics/{path}", params=params, headers=bearer(token))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/validation-failed")
    return {error["field"]: error["message"] for error in body["errors"]}


def campaign(tp: Touchpoint, source: str, medium: str, name: str) -> Touchpoint:
    """``tp`` with Segment's `context.campaign` (the page URL's UTM parameters)."""
    tp.context = {**tp.context, "campaign": {"source": source, "medium": medium, "name": name}}
    return tp
