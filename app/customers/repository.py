"""SQL of the profile read side."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Customer, Identity

# A merge chain longer than this is a bug; reads stop following it rather than loop.
MAX_MERGE_HOPS = 16


async def get_customer(session: AsyncSession, customer_id: uuid.UUID) -> Customer | None:
    return await session.get(Customer, customer_id)


async def survivor(session: AsyncSession, customer_id: uuid.UUID) -> Customer | None:
    """The customer, or the one it was merged into (following the chain)."""
    customer = await get_customer(session, customer_id)
    hops = 0
    while customer is not None and customer.merged_into is not None and hops < MAX_MERGE_HOPS:
        customer = await get_customer(session, customer.merged_into)
        hops += 1
    return customer


async def identities(session: AsyncSession, customer_id: uuid.UUID) -> list[Identity]:
    stmt = (
        select(Identity)
        .where(Identity.customer_id == customer_id)
        .order_by(Identity.kind, Identity.value)
    )
    return list((await session.execute(stmt)).scalars())


async def owner_of(session: AsyncSession, kind: str, value: str) -> uuid.UUID | None:
    stmt = select(Identity.customer_id).where(Identity.kind == kind, Identity.value == value)
    return (await session.execute(stmt)).scalar_one_or_none()
