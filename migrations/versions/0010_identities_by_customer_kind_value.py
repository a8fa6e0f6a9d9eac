"""A customer's identities are indexed in (kind, value) order.

The profile lists at most some identities of each kind, with a count of each, and
``GET /v1/customers/{id}/identities`` pages through them all by keyset on (kind, value).
The index on ``customer_id`` alone found a customer's rows but not in that order: a page of
a customer with 50,000 anonymous ids (a shared device, a scraper) read and sorted all of
them. ``(customer_id, kind, value)`` serves a page, a kind's first values and the counts
(an index-only scan), and every read by ``customer_id`` the old index served, which goes.

Built ``CONCURRENTLY``, outside the migration's transaction, so that the pipeline goes on
writing identities while it builds; the old index is dropped once the new one is there. A
build that fails leaves an invalid index behind, which running the migration again replaces.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_identities_customer_id_kind_value")
        op.create_index(
            op.f("ix_identities_customer_id_kind_value"),
            "identities",
            ["customer_id", "kind", "value"],
            postgresql_concurrently=True,
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_identities_customer_id")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            op.f("ix_identities_customer_id"),
            "identities",
            ["customer_id"],
            postgresql_concurrently=True,
        )
        op.drop_index(
            op.f("ix_identities_customer_id_kind_value"),
            table_name="identities",
            postgresql_concurrently=True,
        )
