"""The spool: messages the API accepted while the broker did not acknowledge them.

Each row is one Kafka message exactly as the API would have produced it (partition, key,
value: a canonical touchpoint or a batch envelope), written in one statement per request;
the API's relay publishes the oldest rows to the broker and deletes them
(``app.spool``). A queue: rows come and go, so autovacuum cleans it up after every
thousand deletions rather than after a fifth of the table.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "spool",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column(
            "spooled_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spool")),
        postgresql_with={"autovacuum_vacuum_scale_factor": 0, "autovacuum_vacuum_threshold": 1000},
    )


def downgrade() -> None:
    op.drop_table("spool")
