"""Profile read API (read token)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from app.auth.dependencies import ReadAccess, read_token
from app.customers import service
from app.customers.schemas import IdentitiesPage, IdentitiesParams, Profile
from app.db import read_connection
from app.errors import ProblemError
from app.identity.identifiers import IdentityConfig
from app.kit.direct import checks, with_uuid
from app.kit.query import parameters
from app.kit.responses import json_response

router = APIRouter(prefix="/v1/customers", tags=["customers"])

# What any read may answer, and a read of one customer.
TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown token."},
    403: {"description": "The credential may not read (e.g. a write key)."},
    503: {"description": "The database could not be reached; retry after `Retry-After` seconds."},
}
READ_ERRORS = {**TOKEN_ERRORS, 404: {"description": "No such customer."}}


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
    return await _profile(request, customer_id)


@router.get(
    "/{customer_id}/identities",
    response_model=IdentitiesPage,
    responses={**READ_ERRORS, 400: {"description": "`cursor` is not one this API issued."}},
    openapi_extra=parameters(IdentitiesParams),
)
async def identities(
    request: Request,
    customer_id: uuid.UUID,
    _: ReadAccess,
    params: Annotated[IdentitiesParams, Depends(IdentitiesParams.of)],
) -> Response:
    """Every identity of the customer, by kind then value, with keyset pagination
    (`next_cursor`): the whole list a profile bounds. A merged id answers with the
    survivor."""
    async with read_connection(request) as connection:
        page = await service.identities(
            connection, customer_id, kind=params.kind, limit=params.limit, cursor=params.cursor
        )
    return json_response(page)


async def _profile(request: Request, customer_id: uuid.UUID) -> Response:
    async with read_connection(request) as connection:
        found = await service.profile(connection, customer_id)
    return json_response(found)


async def _direct(customer_id: uuid.UUID, request: Request) -> Response:
    """:func:`get_profile` for a request that passes its checks, without FastAPI's routing
    and dependency solving (`app.kit.direct`)."""
    with checks(ProblemError):
        await read_token(request)
    return await _profile(request, customer_id)


direct_route = with_uuid("GET", f"{router.prefix}/{{}}", _direct)
