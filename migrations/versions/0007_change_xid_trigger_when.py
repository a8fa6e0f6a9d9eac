"""Run the ``customers_change_xid`` trigger only for statements that leave ``change_xid``.

A writer that sets ``change_xid = pg_current_xact_id()`` itself (the pipeline's profile
UPDATE, which touches tens of thousands of rows a minute) no longer pays a PL/pgSQL call
per row; any other writer still gets the column set by the trigger, as before. The ``WHEN``
condition is evaluated without calling the function.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _trigger(when: str) -> None:
    op.execute("DROP TRIGGER customers_change_xid ON customers")
    op.execute(
        "CREATE TRIGGER customers_change_xid BEFORE UPDATE ON customers"
        f" FOR EACH ROW {when}EXECUTE FUNCTION percorso_touch_change_xid()"
    )


def upgrade() -> None:
    # Equal also when this transaction changed the row before: the trigger then sets the
    # value the row already has.
    _trigger("WHEN (NEW.change_xid = OLD.change_xid) ")


def downgrade() -> None:
    _trigger("")
