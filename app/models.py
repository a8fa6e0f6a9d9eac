"""ORM models. The migrations in ``migrations/`` are the source of truth for the schema;
these mirror them for the read side and the admin commands."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base

CHANNELS = ("web", "email", "social", "in_store", "mobile", "crm", "call_center", "ads", "other")
TOKEN_SCOPES = ("read", "admin")

TZ = DateTime(timezone=True)


class Source(Base):
    """Something that sends touchpoints (a website, an email tool, a till). Owns a write key."""

    __tablename__ = "sources"
    __table_args__ = (CheckConstraint(f"channel IN {CHANNELS!r}", name="channel"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    channel: Mapped[str] = mapped_column(Text)
    # sha256 of the write key; the key itself is shown once, at creation.
    write_key_hash: Mapped[str] = mapped_column(Text, unique=True)
    write_key_prefix: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    disabled_at: Mapped[datetime | None] = mapped_column(TZ)


class ApiToken(Base):
    """A bearer token for the read side (scope ``read``) or administration (``admin``)."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(f"scope IN {TOKEN_SCOPES!r}", name="scope"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    token_hash: Mapped[str] = mapped_column(Text, unique=True)
    token_prefix: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(TZ)


class Customer(Base):
    """One person: the unified profile that identities, events and journey hang off."""

    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    first_seen_at: Mapped[datetime] = mapped_column(TZ)
    last_seen_at: Mapped[datetime] = mapped_column(TZ)
    traits: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # occurred_at of the newest event whose traits were applied: older events only fill gaps.
    traits_at: Mapped[datetime | None] = mapped_column(TZ)
    event_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    channel_counts: Mapped[dict[str, int]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    current_stage: Mapped[str | None] = mapped_column(Text)
    furthest_stage: Mapped[str | None] = mapped_column(Text)
    # Per-customer journey engine state (rule counters); rebuilt when the model changes.
    journey_state: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # Set when this customer was merged into another; reads follow it to the survivor.
    merged_into: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("customers.id")
    )


class Identity(Base):
    """An identifier (kind, value) that belongs to exactly one customer."""

    __tablename__ = "identities"
    __table_args__ = (Index(None, "customer_id"),)

    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("customers.id"))
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class Event(Base):
    """A touchpoint on a customer's timeline. Unique per (source, message id)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source_id", "message_id"),
        Index(
            "ix_events_customer_timeline",
            "customer_id",
            text("occurred_at DESC"),
            text("event_id DESC"),
        ),
    )

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    source_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("sources.id"))
    message_id: Mapped[str] = mapped_column(Text)
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("customers.id"))
    type: Mapped[str] = mapped_column(Text)
    event: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(TZ)
    sent_at: Mapped[datetime | None] = mapped_column(TZ)
    received_at: Mapped[datetime] = mapped_column(TZ)
    stored_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    # The customer's stage once this event was applied (see app/journey).
    stage: Mapped[str | None] = mapped_column(Text)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB)
    traits: Mapped[dict[str, Any]] = mapped_column(JSONB)
    context: Mapped[dict[str, Any]] = mapped_column(JSONB)
    flags: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))


class DeadLetter(Base):
    """A message the pipeline could not process, kept with the reason."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class IdentityLock(Base):
    """Lock stripes for identity resolution (65,536 rows; see migration 0001)."""

    __tablename__ = "identity_locks"

    stripe: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
