"""Dead letters are known by their origin, stored once and published once.

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

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
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


def downgrade() -> None:
    op.drop_constraint(
        op.f("uq_dead_letters_topic_partition_offset_item"), "dead_letters", type_="unique"
    )
    op.drop_column("dead_letters", "published_at")
    op.drop_column("dead_letters", "item")
