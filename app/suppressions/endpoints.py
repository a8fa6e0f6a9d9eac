"""Suppression API (admin token): suppress an identifier without erasing anything, and lift
a suppression when consent is given again. The identifier travels in the body, never in the
URL, which proxies and access logs keep."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app.auth.dependencies import AdminAccess
from app.customers.endpoints import ADMIN_ERRORS, IDENTIFIER_BODY, identifier_body
from app.db import read_connection
from app.ingest.endpoints import IdentityDep
from app.suppressions import service
from app.suppressions.schemas import SuppressionOut

router = APIRouter(prefix="/v1/suppressions", tags=["privacy"])

_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **ADMIN_ERRORS,
    400: {"description": "Not one identifier, or one that never identifies anyone."},
    415: {"description": "Not a JSON body."},
}


@router.post(
    "",
    response_model=SuppressionOut,
    status_code=201,
    responses={
        200: {"description": "Suppressed already (since `created_at`).", "model": SuppressionOut},
        **_BODY_ERRORS,
    },
    openapi_extra=IDENTIFIER_BODY,
)
async def suppress(request: Request, token: AdminAccess, identity: IdentityDep) -> Response:
    """Suppress an identifier without erasing anything (Segment's "Suppress Only"): from
    now on the pipeline drops every event that carries it, and `POST /v1/contacts` refuses
    a contact that has it. What is stored stays: `DELETE /v1/customers/{id}` erases it.
    201 when newly suppressed, 200 when it was already."""
    identifier = await identifier_body(request)
    async with read_connection(request) as connection:
        found, added = await service.suppress(connection, identifier, identity, token.id)
    return Response(
        found.model_dump_json(), status_code=201 if added else 200, media_type="application/json"
    )


@router.delete(
    "",
    status_code=204,
    responses={**_BODY_ERRORS, 404: {"description": "The identifier is not suppressed."}},
    openapi_extra=IDENTIFIER_BODY,
)
async def unsuppress(request: Request, _: AdminAccess, identity: IdentityDep) -> Response:
    """Lift a suppression (consent given again): the identifier's events are stored again
    from the pipeline's next transaction on. Events sent meanwhile were dropped for good."""
    identifier = await identifier_body(request)
    async with read_connection(request) as connection:
        await service.unsuppress(connection, identifier, identity)
    return Response(status_code=204)
