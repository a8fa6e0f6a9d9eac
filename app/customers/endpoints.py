"""Profile read API (read token)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app.auth.dependencies import ReadAccess
from app.customers import service
from app.customers.schemas import Profile
from app.db import ReadSessionDep
from app.identity.identifiers import IdentityConfig

router = APIRouter(prefix="/v1/customers", tags=["customers"])

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown token (problem+json)."},
    403: {"description": "The credential may not read (e.g. a write key) (problem+json)."},
    404: {"description": "No such customer (problem+json)."},
}


@router.get("/lookup", response_model=Profile, responses=READ_ERRORS)
async def lookup(
    request: Request,
    session: ReadSessionDep,
    _: ReadAccess,
    kind: Annotated[str, Query(min_length=1, max_length=64, examples=["email"])],
    value: Annotated[str, Query(min_length=1, max_length=255, examples=["ada@example.com"])],
) -> Profile:
    """The profile that owns an identifier (any kind: `email`, `user_id`, `phone`, …)."""
    config: IdentityConfig = request.state.identity_config
    return await service.lookup(session, kind, value, config)


@router.get("/{customer_id}", response_model=Profile, responses=READ_ERRORS)
async def get_profile(customer_id: uuid.UUID, session: ReadSessionDep, _: ReadAccess) -> Profile:
    """A customer's unified profile. A merged id answers with the survivor."""
    return await service.profile(session, customer_id)
