"""Privacy: the suppression list, and the audit of erasures.

``suppressions`` holds identifiers whose events the pipeline drops (and whose contacts the
API refuses): each as the SHA-256 of ``kind:value`` (the value normalised as events' are),
never the value itself, with its kind (not personal) for counting. ``erasures`` is the
audit of each ``DELETE /v1/customers/{id}``: ids, time, counts and the token that asked,
no identifier. ``erased_customers`` lists each customer id an erasure removed (the survivor
and those merged into it), with the transaction that removed it: the CRM changes feed
reports them as erased, in the feed's own order (``change_xid``, id).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.Column("requested_id", sa.UUID(), nullable=False),
        sa.Column("erased_at", TZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("token_id", sa.UUID(), nullable=True),
        sa.Column("suppress", sa.Boolean(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("stage_transitions", sa.BigInteger(), nullable=False),
        sa.Column("identities", sa.Integer(), nullable=False),
        sa.Column("merges", sa.Integer(), nullable=False),
        sa.Column("dead_letters", sa.Integer(), nullable=False),
        sa.Column("suppressed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
    )
    # The changes feed pages on (change_xid, id), as it does customers (migration 0003).
    op.execute(
        """
        CREATE TABLE erased_customers (
            customer_id uuid NOT NULL CONSTRAINT pk_erased_customers PRIMARY KEY,
            erasure_id bigint NOT NULL
                CONSTRAINT fk_erased_customers_erasure_id_erasures REFERENCES erasures (id),
            change_xid xid8 NOT NULL DEFAULT pg_current_xact_id()
        )
        """
    )
    op.create_index(op.f("ix_erased_customers_erasure_id"), "erased_customers", ["erasure_id"])
    op.create_index(
        "ix_erased_customers_change_xid", "erased_customers", ["change_xid", "customer_id"]
    )
    op.create_table(
        "suppressions",
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("token_id", sa.UUID(), nullable=True),
        sa.Column("erasure_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("reason IN ('erasure', 'request')", name=op.f("ck_suppressions_reason")),
        sa.CheckConstraint("octet_length(digest) = 32", name=op.f("ck_suppressions_digest_length")),
        sa.ForeignKeyConstraint(
            ["erasure_id"], ["erasures.id"], name=op.f("fk_suppressions_erasure_id_erasures")
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_suppressions")),
    )
    op.create_index(op.f("ix_suppressions_erasure_id"), "suppressions", ["erasure_id"])


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_table("erased_customers")
    op.drop_table("erasures")
