"""SQL of the journey read side (SQLAlchemy; the request owns the session)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import StageTransition


async def transitions(session: AsyncSession, customer_id: uuid.UUID) -> list[StageTransition]:
    """The customer's stage transitions, oldest first (served by the history index)."""
    stmt = (
        select(StageTransition)
        .where(StageTransition.customer_id == customer_id)
        .order_by(StageTransition.entered_at, StageTransition.event_id)
    )
    return list((await session.execute(stmt)).scalars())
