"""Drop the identity lock stripes: resolution is optimistic now.

Two batches of a few thousand identifiers almost always shared one of the 65,536 stripes,
so concurrent consumers ran one at a time. Consumers now lock only the customers they
match (in id order) and retry when another consumer recorded an identifier first.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("identity_locks")


def downgrade() -> None:
    op.create_table(
        "identity_locks",
        sa.Column("stripe", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("stripe", name=op.f("pk_identity_locks")),
    )
    op.execute("INSERT INTO identity_locks (stripe) SELECT generate_series(0, 65535)")
