"""Journey read API (read token)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.auth.dependencies import ReadAccess
from app.customers.endpoints import READ_ERRORS, TOKEN_ERRORS
from app.db import ReadSessionDep
from app.journey import service
from app.journey.model import JourneyModel
from app.journey.schemas import CustomerJourney, JourneyModelOut, JourneyParams
from app.kit.query import parameters

router = APIRouter(tags=["journey"])


def active_model(request: Request) -> JourneyModel:
    """The journey model loaded at start-up (``PERCORSO_JOURNEY_MODEL``)."""
    model: JourneyModel = request.state.journey_model
    return model


ActiveModel = Annotated[JourneyModel, Depends(active_model)]


@router.get(
    "/v1/customers/{customer_id}/journey",
    response_model=CustomerJourney,
    responses={**READ_ERRORS, 400: {"description": "`cursor` is not one this list issued."}},
    openapi_extra=parameters(JourneyParams),
)
async def customer_journey(
    customer_id: uuid.UUID,
    session: ReadSessionDep,
    model: ActiveModel,
    _: ReadAccess,
    params: Annotated[JourneyParams, Depends(JourneyParams.of)],
) -> CustomerJourney:
    """The customer's current and furthest stage and its stage transitions, oldest first,
    with keyset pagination (`next_cursor`): the stages come on every page. A merged id
    answers with the survivor."""
    return await service.customer_journey(
        session,
        customer_id,
        model,
        limit=params.limit,
        cursor=params.cursor,
        since=params.since,
        until=params.until,
    )


@router.get(
    "/v1/journey/model",
    response_model=JourneyModelOut,
    responses=TOKEN_ERRORS,
)
async def journey_model(model: ActiveModel, _: ReadAccess) -> JourneyModelOut:
    """The active journey model: its stages in order and its rules."""
    return JourneyModelOut.model_validate(model.to_json())
