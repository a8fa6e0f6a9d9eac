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
from sqlalchemy import (
    Identity as Generated,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

from app.db import Base

CHANNELS = ("web", "email", "social", "in_store", "mobile", "crm", "call_center", "ads", "other")
TOKEN_SCOPES = ("read", "admin")

TZ = DateTime(timezone=True)


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id, which SQLAlchemy does not know (asyncpg reads it
    as an ``int``)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


# Reflection (Alembic's autogenerate and `alembic check`) then reads the column's type.
ischema_names["xid8"] = Xid8


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
    __table_args__ = (
        # The customers merged into one (a merge re-points them to its survivor: 0008).
        Index(None, "merged_into", postgresql_where=text("merged_into IS NOT NULL")),
        # The CRM changes feed's keyset (migration 0003).
        Index("ix_customers_change_xid", "change_xid", "id"),
    )

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
    # What the stored journey was computed from (migration 0002): the model's fingerprint,
    # and the newest event applied in (occurred_at, event_id) order.
    journey_model: Mapped[str | None] = mapped_column(Text)
    journey_at: Mapped[datetime | None] = mapped_column(TZ)
    journey_event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # Set when this customer was merged into another: its survivor, one hop away.
    merged_into: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("customers.id")
    )
    # The transaction that last changed the row: the changes feed's cursor. Set by whoever
    # writes the row, or else by the trigger of migrations 0003 and 0007.
    change_xid: Mapped[int] = mapped_column(Xid8(), server_default=text("pg_current_xact_id()"))


class Identity(Base):
    """An identifier (kind, value) that belongs to exactly one customer."""

    __tablename__ = "identities"
    # A customer's identities in (kind, value) order: profile, identity pages (migration 0010).
    __table_args__ = (Index(None, "customer_id", "kind", "value"),)

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
        # Time windows across customers (analytics; migration 0011).
        Index(
            "ix_events_occurred_at_brin",
            "occurred_at",
            postgresql_using="brin",
            postgresql_with={"autosummarize": "on"},
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
    # Stored order (see migration 0003): a serial order of the pipeline's processing.
    seq: Mapped[int] = mapped_column(BigInteger, Generated())


class DeadLetter(Base):
    """A message the pipeline could not process, kept with the reason; once per origin
    (a redelivered record's letters are not stored again: migration 0008)."""

    __tablename__ = "dead_letters"
    __table_args__ = (UniqueConstraint("topic", "partition", "offset", "item"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    # The call's position among its envelope's items; -1 for a whole record; NULL for a
    # letter stored before migration 0008 whose call is not known.
    item: Mapped[int | None] = mapped_column(Integer)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    # When it went on the dead-letter topic (NULL: not yet).
    published_at: Mapped[datetime | None] = mapped_column(TZ)


class SpoolMessage(Base):
    """A message the API accepted while the broker did not acknowledge it, as it would have
    been produced; the relay publishes it and deletes it (``app.spool``, migration 0013)."""

    __tablename__ = "spool"

    id: Mapped[int] = mapped_column(BigInteger, Generated(always=False), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer)
    key: Mapped[bytes] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    spooled_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class StageTransition(Base):
    """One change of a customer's current stage, with the touchpoint that caused it.

    ``exited_at`` is NULL while the stage is current (at most one such row per customer).
    Rows are rewritten when a late event or a merge changes the customer's history: from the
    last transition before the change on (its ``state`` is where the replay resumes).
    """

    __tablename__ = "stage_transitions"
    __table_args__ = (
        CheckConstraint("exited_at IS NULL OR exited_at >= entered_at", name="exit_after_entry"),
        Index(
            "uq_stage_transitions_open",
            "customer_id",
            unique=True,
            postgresql_where=text("exited_at IS NULL"),
        ),
    )

    # customers.id (no foreign key: see migration 0002)
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    entered_at: Mapped[datetime] = mapped_column(TZ, primary_key=True)
    # events.event_id of the touchpoint that caused the change
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    from_stage: Mapped[str | None] = mapped_column(Text)
    to_stage: Mapped[str] = mapped_column(Text)
    exited_at: Mapped[datetime | None] = mapped_column(TZ)
    channel: Mapped[str] = mapped_column(Text)
    event: Mapped[str | None] = mapped_column(Text)
    rule_id: Mapped[str | None] = mapped_column(Text)
    # The journey state once this transition's event was applied (a checkpoint late events
    # replay from); NULL on rows written before migration 0006. Internal: never served.
    state: Mapped[dict[str, Any] | None] = mapped_column(JSONB, deferred=True)


class Merge(Base):
    """The merge log: ``merged_id`` was merged into ``survivor_id`` because of ``event_id``."""

    __tablename__ = "merges"

    id: Mapped[int] = mapped_column(BigInteger, Generated(), primary_key=True)
    survivor_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("customers.id"), index=True
    )
    merged_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("customers.id"), index=True
    )
    event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # The identifiers of the event that linked the two customers.
    identifiers: Mapped[list[dict[str, str]]] = mapped_column(JSONB)
    merged_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


SUPPRESSION_REASONS = ("erasure", "request")


class Erasure(Base):
    """The audit of one erasure (``DELETE /v1/customers/{id}``): which customer, when, who
    asked (the API token's id) and how many rows went. Holds no identifier, trait or event:
    only ids that name nothing outside Percorso, times and counts."""

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(BigInteger, Generated(always=False), primary_key=True)
    # The survivor erased, and the id that was asked for (one merged into it, or the same).
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    requested_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    erased_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    token_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # Whether the customer's identifiers were suppressed with it.
    suppress: Mapped[bool]
    customers: Mapped[int] = mapped_column(Integer)
    events: Mapped[int] = mapped_column(BigInteger)
    stage_transitions: Mapped[int] = mapped_column(BigInteger)
    identities: Mapped[int] = mapped_column(Integer)
    merges: Mapped[int] = mapped_column(Integer)
    dead_letters: Mapped[int] = mapped_column(Integer)
    suppressed: Mapped[int] = mapped_column(Integer)


class ErasedCustomer(Base):
    """A customer id an erasure removed (the survivor and each id merged into it), which the
    CRM changes feed reports as erased, in its order: ``change_xid`` is the erasure's
    transaction (see ``Customer.change_xid``)."""

    __tablename__ = "erased_customers"
    __table_args__ = (Index("ix_erased_customers_change_xid", "change_xid", "customer_id"),)

    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    erasure_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("erasures.id"), index=True)
    change_xid: Mapped[int] = mapped_column(Xid8(), server_default=text("pg_current_xact_id()"))


class Suppression(Base):
    """An identifier whose events the pipeline drops and whose contacts the API refuses.
    Kept as the SHA-256 of ``kind:value`` (normalised as events' identifiers are), never
    the value: see app.suppressions."""

    __tablename__ = "suppressions"
    __table_args__ = (
        CheckConstraint(f"reason IN {SUPPRESSION_REASONS!r}", name="reason"),
        CheckConstraint("octet_length(digest) = 32", name="digest_length"),
    )

    digest: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    # ``erasure``: recorded by an erasure (``erasure_id``); ``request``: suppressed alone.
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    token_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    erasure_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("erasures.id"), index=True
    )
