"""journey transitions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

``stage_transitions`` holds one row per change of a customer's current stage. The customer
columns record what the stored journey was computed from: the model's fingerprint
(``journey_model``; NULL = never computed under a known model, so the pipeline or
``percorso journey rebuild`` recomputes it) and the newest event applied
(``journey_at``, ``journey_event_id``: an incoming event ordered before it is late).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("journey_model", sa.Text(), nullable=True))
    op.add_column("customers", sa.Column("journey_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("customers", sa.Column("journey_event_id", sa.UUID(), nullable=True))
    op.create_table(
        "stage_transitions",
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        # The event that caused the change (events.event_id). Not a foreign key: events
        # will be range-partitioned by time, and a key referencing a partitioned table must
        # include its partition column.
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("from_stage", sa.Text(), nullable=True),
        sa.Column("to_stage", sa.Text(), nullable=False),
        sa.Column("exited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=True),
        sa.Column("rule_id", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "exited_at IS NULL OR exited_at >= entered_at",
            name=op.f("ck_stage_transitions_exit_after_entry"),
        ),
        # One event changes a customer's stage at most once; the key is also the customer's
        # history in time order (the journey API). No foreign key to customers: the pipeline
        # writes transitions only under the customer's row lock, and a per-row RI check
        # costs more than the rest of the insert.
        sa.PrimaryKeyConstraint(
            "customer_id", "entered_at", "event_id", name=op.f("pk_stage_transitions")
        ),
    )
    # At most one open (current) transition per customer; the pipeline closes it by this.
    op.create_index(
        "uq_stage_transitions_open",
        "stage_transitions",
        ["customer_id"],
        unique=True,
        postgresql_where=sa.text("exited_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_stage_transitions_open", table_name="stage_transitions")
    op.drop_table("stage_transitions")
    op.drop_column("customers", "journey_event_id")
    op.drop_column("customers", "journey_at")
    op.drop_column("customers", "journey_model")
