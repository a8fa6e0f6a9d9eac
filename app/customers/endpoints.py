"""Profile read API (read token)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app.auth.dependencies import ReadAccess
from app.customers import service
from app.customers.schemas import Profile
from app.db import read_connection
from app.identity.identifiers import IdentityConfig
from app.kit.responses import json_response

router = APIRouter(prefix="/v1/customers", tags=["customers"])

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown token (problem+json)."},
    403: {"description": "The credential may not read (e.g. a write key) (problem+json)."},
    404: {"description": "No such customer (problem+json)."},
}


@router.get("/lookup", response_model=Profile, responses=READ_ERRORS)
async def lookup(
    request: Request,
    _: ReadAccess,
    kind: Annotated[str, Query(min_length=1, max_length=64, examples=["email"])],
    value: Annotated[str, Query(min_length=1, max_length=255, examples=["ada@example.com"])],
) -> Response:
    """The profile that owns an identifier (any kind: `email`, `user_id`, `phone`, …)."""
    config: IdentityConfig = request.state.identity_config
    async with read_connection(request) as connection:
        found = await service.lookup(connection, kind, value, config)
    return json_response(found)


@router.get("/{customer_id}", response_model=Profile, responses=READ_ERRORS)
async def get_profile(request: Request, customer_id: uuid.UUID, _: ReadAccess) -> Response:
    """A customer's unified profile. A merged id answers with the survivor."""
    async with read_connection(request) as connection:
        found = await service.profile(connection, customer_id)
    return json_response(found)
