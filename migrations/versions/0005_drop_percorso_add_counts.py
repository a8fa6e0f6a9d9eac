"""Drop ``percorso_add_counts``: profile updates add a batch's channel counts inline.

The function walked every key of both count objects and cost half of the pipeline's
profile UPDATE; the statement now visits only the batch's channels.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP FUNCTION percorso_add_counts(jsonb, jsonb)")


def downgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION percorso_add_counts(a jsonb, b jsonb) RETURNS jsonb
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT coalesce(jsonb_object_agg(k, coalesce((a ->> k)::bigint, 0)
                                             + coalesce((b ->> k)::bigint, 0)), '{}'::jsonb)
            FROM (SELECT jsonb_object_keys(a) AS k UNION SELECT jsonb_object_keys(b)) AS keys
        $$
        """
    )
