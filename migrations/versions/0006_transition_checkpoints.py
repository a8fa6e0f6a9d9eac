"""Journey checkpoints: each stage transition keeps the journey state after its event.

A late event then replays the customer's events from the last transition before it,
instead of the whole timeline. Rows written before this revision have no state (NULL);
such a customer replays from its first event once, which writes states for its history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("stage_transitions", sa.Column("state", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("stage_transitions", "state")
