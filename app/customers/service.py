"""Reading profiles. A merged customer's id answers with the survivor."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.customers import repository
from app.customers.schemas import IdentityOut, Profile, answered_for
from app.errors import NotFound
from app.identity.identifiers import IdentityConfig, InvalidIdentifier, normalise
from app.models import Customer


async def resolve_customer(session: AsyncSession, customer_id: uuid.UUID) -> Customer:
    customer = await repository.survivor(session, customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id}")
    return customer


async def profile(session: AsyncSession, customer_id: uuid.UUID) -> Profile:
    customer = await resolve_customer(session, customer_id)
    return await _profile(session, customer, requested=customer_id)


async def lookup(session: AsyncSession, kind: str, value: str, config: IdentityConfig) -> Profile:
    """The profile owning identifier ``(kind, value)``; the value is normalised first, so
    ``Ada@Example.com`` finds ``ada@example.com``."""
    try:
        normalised = normalise(kind, value, config)
    except InvalidIdentifier as exc:
        raise NotFound(f"no customer with {kind} {value!r}: {exc}") from None
    owner = await repository.owner_of(session, kind, normalised)
    if owner is None:
        raise NotFound(f"no customer with {kind} {normalised!r}")
    customer = await resolve_customer(session, owner)
    return await _profile(session, customer, requested=None)


async def _profile(
    session: AsyncSession, customer: Customer, requested: uuid.UUID | None
) -> Profile:
    idents = await repository.identities(session, customer.id)
    return Profile(
        id=customer.id,
        **answered_for(requested, customer.id),
        identities=[IdentityOut(kind=i.kind, value=i.value) for i in idents],
        traits=customer.traits,
        stage=customer.current_stage,
        furthest_stage=customer.furthest_stage,
        first_seen_at=customer.first_seen_at,
        last_seen_at=customer.last_seen_at,
        event_count=customer.event_count,
        channel_counts=customer.channel_counts,
    )
