"""Profile read API (read token); a customer's export and erasure (admin token)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from app.auth.dependencies import AdminAccess, ReadAccess, read_token
from app.config import Settings
from app.customers import export, service
from app.customers.schemas import (
    MAX_IDENTIFIER_BYTES,
    Erasure,
    IdentifierIn,
    IdentitiesPage,
    IdentitiesParams,
    Profile,
)
from app.db import read_connection
from app.errors import InvalidRequest, ProblemError, validation_errors
from app.identity.identifiers import MAX_KIND_LENGTH, MAX_VALUE_LENGTH, IdentityConfig
from app.ingest.body import read_json
from app.kit.direct import checks, with_uuid
from app.kit.query import parameters
from app.kit.responses import TimedStreamingResponse, json_response

router = APIRouter(prefix="/v1/customers", tags=["customers"])

# What any read may answer, and a read of one customer.
TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown token."},
    403: {"description": "The credential may not read (e.g. a write key)."},
    503: {"description": "The database could not be reached; retry after `Retry-After` seconds."},
}
READ_ERRORS = {**TOKEN_ERRORS, 404: {"description": "No such customer."}}
# What an administrative operation may answer besides its own.
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **TOKEN_ERRORS,
    403: {"description": "The credential is not an admin token (a read token, a write key)."},
    503: {
        "description": "The database could not be reached, or the pipeline's writers (or a"
        " journey rebuild) held their locks too long, and nothing was changed; retry after"
        " `Retry-After` seconds."
    },
}

# A JSON body of one identifier (`IdentifierIn`), as an operation's `openapi_extra`.
IDENTIFIER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": IdentifierIn.model_json_schema(),
                "example": {"kind": "email", "value": "ada@example.com"},
            }
        },
    }
}


async def identifier_body(request: Request) -> IdentifierIn:
    """The request's body as one identifier: a 400 problem for any other JSON, one over
    ``MAX_IDENTIFIER_BYTES`` or none, a 415 for another media type (`app.ingest.body`)."""
    raw = await read_json(request, MAX_IDENTIFIER_BYTES)
    try:
        return IdentifierIn.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRequest(
            'the body is one identifier: {"kind", "value"}',
            errors=validation_errors(exc.errors()),
        ) from None


@router.get("/lookup", response_model=Profile, responses=READ_ERRORS)
async def lookup(
    request: Request,
    _: ReadAccess,
    kind: Annotated[str, Query(min_length=1, max_length=MAX_KIND_LENGTH, examples=["email"])],
    value: Annotated[
        str, Query(min_length=1, max_length=MAX_VALUE_LENGTH, examples=["ada@example.com"])
    ],
) -> Response:
    """The profile that owns an identifier (any kind: `email`, `user_id`, `phone`, …).
    The identifier is in the URL, which proxies' and load balancers' access logs keep:
    prefer `POST /v1/customers/lookup`, which takes it in the body."""
    return await _lookup(request, kind, value)


@router.post(
    "/lookup",
    response_model=Profile,
    responses={
        **READ_ERRORS,
        400: {"description": 'Not one identifier `{"kind", "value"}`, or over 4 KB.'},
        415: {"description": "Not a JSON body."},
    },
    openapi_extra=IDENTIFIER_BODY,
)
async def lookup_in_body(request: Request, _: ReadAccess) -> Response:
    """The profile that owns an identifier, named in the body (`{"kind", "value"}`), not
    in a URL that access logs keep: otherwise as `GET /v1/customers/lookup`, the same
    normalisation and answers. Changes nothing, though it is a POST."""
    identifier = await identifier_body(request)
    return await _lookup(request, identifier.kind, identifier.value)


async def _lookup(request: Request, kind: str, value: str) -> Response:
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
    responses={**READ_ERRORS, 400: {"description": "`cursor` is not one this list issued."}},
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


@router.get(
    "/{customer_id}/export",
    responses={
        200: {
            "description": "The customer's data as NDJSON: one JSON object a line, each with"
            " a `record` field (`export`, `profile`, `identity`, `merge`, `stage_transition`,"
            " `event`, `dead_letter`, then `end` with the count of each). A stream without"
            " the `end` line was cut short: the connection lost, or longer than"
            " `PERCORSO_EXPORT_TIMEOUT_S`.",
            "content": {export.MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
        **ADMIN_ERRORS,
        404: {"description": "No such customer."},
    },
    response_class=StreamingResponse,
    tags=["privacy"],
)
async def export_customer(request: Request, customer_id: uuid.UUID, _: AdminAccess) -> Response:
    """Everything Percorso holds about a customer (data subject access): profile, every
    identity, merge, stage transition and event (all fields), and the dead letters that
    hold one of its identifiers, streamed as NDJSON from one
    consistent snapshot. A merged id exports its survivor. Admin token: a bulk copy of one
    person's data is an administrative act."""
    settings: Settings = request.state.settings
    lines = export.stream(request.state.read_pool, customer_id)
    first = await anext(lines)  # a 404 goes out here, before any line
    return TimedStreamingResponse(
        _prepend(first, lines),
        limit_s=settings.export_timeout_s,
        media_type=export.MEDIA_TYPE,
        headers={"content-disposition": f'attachment; filename="customer-{customer_id}.ndjson"'},
    )


async def _prepend(first: bytes, rest: AsyncGenerator[bytes]) -> AsyncGenerator[bytes]:
    async with aclosing(rest):  # closed with this one: its transaction ends then
        yield first
        async for chunk in rest:
            yield chunk


@router.delete(
    "/{customer_id}",
    response_model=Erasure,
    responses={**ADMIN_ERRORS, 404: {"description": "No such customer, nor one erased."}},
    tags=["privacy"],
)
async def erase_customer(
    request: Request,
    customer_id: uuid.UUID,
    token: AdminAccess,
    suppress: Annotated[
        bool,
        Query(
            description="Also suppress its identifiers, so the pipeline drops their later"
            ' events (Segment\'s "suppress with delete"); `false` only deletes, and a later'
            " event starts a new profile."
        ),
    ] = True,
) -> Response:
    """Erase a customer and every customer merged into it (right to erasure): events,
    stage transitions, identities, merges, profile and journey, and the dead letters that
    hold one of its identifiers; by default its identifiers are suppressed. Answers the
    audit record kept of it (ids, time, counts; no identifier). Idempotent: an id erased
    before (the customer's, or one merged into it) answers 200 with the same record, so
    a retry after a lost answer reads as done; an id never known is a 404. The changes
    feed reports each erased id (`erased: true`)."""
    async with read_connection(request) as connection:
        done = await service.erase(connection, customer_id, suppress=suppress, token_id=token.id)
    return json_response(done)


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
