"""Identity graph: the merge log, the stored order of events, and a change cursor on
customers for the CRM changes feed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "merges",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("survivor_id", sa.UUID(), nullable=False),
        sa.Column("merged_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=True),
        sa.Column("identifiers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "merged_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["survivor_id"], ["customers.id"], name=op.f("fk_merges_survivor_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["merged_id"], ["customers.id"], name=op.f("fk_merges_merged_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merges")),
    )
    op.create_index(op.f("ix_merges_survivor_id"), "merges", ["survivor_id"])
    op.create_index(op.f("ix_merges_merged_id"), "merges", ["merged_id"])

    # The order in which the pipeline stored events. Conflicting batches are serialised (by
    # customer row locks, or a retry after an identity conflict) before they insert events,
    # so this is an order in which processing the events one by one gives the same graph.
    op.add_column("events", sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False))

    # Change cursor for GET /v1/contacts/changes: the id of the transaction that last changed
    # the row. Readers only return changes below the oldest transaction still running
    # (pg_snapshot_xmin), so a change committed late is never skipped.
    op.execute(
        "ALTER TABLE customers ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id()"
    )
    op.execute(
        """
        CREATE FUNCTION percorso_touch_change_xid() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.change_xid := pg_current_xact_id();
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER customers_change_xid BEFORE UPDATE ON customers"
        " FOR EACH ROW EXECUTE FUNCTION percorso_touch_change_xid()"
    )
    op.create_index("ix_customers_change_xid", "customers", ["change_xid", "id"])


def downgrade() -> None:
    op.drop_index("ix_customers_change_xid", table_name="customers")
    op.execute("DROP TRIGGER customers_change_xid ON customers")
    op.execute("DROP FUNCTION percorso_touch_change_xid()")
    op.drop_column("customers", "change_xid")
    op.drop_column("events", "seq")
    op.drop_index(op.f("ix_merges_merged_id"), table_name="merges")
    op.drop_index(op.f("ix_merges_survivor_id"), table_name="merges")
    op.drop_table("merges")
