"""Dead letters are known by their origin, stored once and published once; a merged
customer points at its survivor, one hop.

A redelivered batch (a crash between the database and offset commits, an offset commit
failed after a rebalance, a part that failed while another committed) has the same dead
letters; each was inserted, and sent to the dead-letter topic, once per delivery. A letter
now records its call's position in its envelope (``item``; -1: the whole record) and when it
went on the topic (``published_at``), and ``(topic, partition, offset, item)`` is unique.

Letters stored before: a letter alike in origin, reason and payload to an earlier one is
that one stored again, and goes (a call the database refused was rebuilt with another
``event_id``, so that field is left out of the comparison). What remains counts as
published, as the consumer published each after its commit. Their ``item`` is not known,
so it stays NULL (never equal to a new letter's), except for a letter of a record that
could not be decoded, which is always whole.

A merge re-pointed only the loser: customers merged into it before kept pointing at it, and
reads, which follow at most 16 links, served a merged-away customer at the end of a longer
chain. A merge now also re-points those (found by a partial index on ``merged_into``), and
the chains already stored are flattened here. Merge cycles (never written by Percorso) are
left as they are. A downgrade keeps the chains flat: one hop is a chain too.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A payload as compared: a serialised touchpoint's first event_id left out.
_COMPARED = """regexp_replace(encode(payload, 'escape'), '"event_id":"[0-9a-f-]{36}"', '')"""


def upgrade() -> None:
    _dead_letters_once()
    _merges_one_hop()


def downgrade() -> None:
    op.drop_index(op.f("ix_customers_merged_into"), table_name="customers")
    op.drop_constraint(
        op.f("uq_dead_letters_topic_partition_offset_item"), "dead_letters", type_="unique"
    )
    op.drop_column("dead_letters", "published_at")
    op.drop_column("dead_letters", "item")


def _dead_letters_once() -> None:
    op.add_column("dead_letters", sa.Column("item", sa.Integer(), nullable=True))
    op.add_column(
        "dead_letters", sa.Column("published_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(
        f"""
        DELETE FROM dead_letters WHERE id IN (
            SELECT id FROM (
                SELECT id, row_number() OVER (
                    PARTITION BY topic, partition, "offset", reason, {_COMPARED} ORDER BY id
                ) AS copy
                FROM dead_letters
            ) AS letters
            WHERE copy > 1
        )
        """  # noqa: S608 (constant SQL)
    )
    # A record that could not be decoded has one letter, whatever its reason's wording.
    op.execute(
        """
        DELETE FROM dead_letters d USING dead_letters kept
        WHERE d.reason LIKE 'undecodable %' AND kept.reason LIKE 'undecodable %'
          AND (kept.topic, kept.partition, kept."offset") = (d.topic, d.partition, d."offset")
          AND kept.id < d.id
        """
    )
    op.execute(
        "UPDATE dead_letters SET published_at = created_at,"
        " item = CASE WHEN reason LIKE 'undecodable %' THEN -1 END"
    )
    op.create_unique_constraint(
        op.f("uq_dead_letters_topic_partition_offset_item"),
        "dead_letters",
        ["topic", "partition", "offset", "item"],
    )


def _merges_one_hop() -> None:
    op.create_index(
        op.f("ix_customers_merged_into"),
        "customers",
        ["merged_into"],
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )
    # Down from each live customer, through the customers merged into it (each has one
    # `merged_into`, so each is reached once, and a cycle never).
    op.execute(
        """
        WITH RECURSIVE merged (id, survivor) AS (
            SELECT c.id, c.merged_into FROM customers c
            JOIN customers s ON s.id = c.merged_into AND s.merged_into IS NULL
            UNION ALL
            SELECT c.id, merged.survivor FROM merged JOIN customers c ON c.merged_into = merged.id
        )
        UPDATE customers c SET merged_into = merged.survivor, updated_at = now()
        FROM merged WHERE c.id = merged.id AND c.merged_into <> merged.survivor
        """
    )
