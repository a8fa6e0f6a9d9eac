"""Email identities are stored in Unicode NFC, as the pipeline now normalises them.

An address was only trimmed and lower-cased, so "josé@example.com" typed with one "é" (NFC)
and with "e" and a combining accent (NFD) made two identities, two customers, and a lookup
that found one or the other by the form typed. Emails are now put in NFC; this rewrites
the email identities stored in another form, and touches their customers (``updated_at``,
and so ``change_xid``), which ``/v1/contacts/changes`` then reports with the new spelling.

An identity whose NFC form is already stored (another customer's, or its own) is left as it
is, and so are all but the oldest of several that share an NFC form not yet stored: their
customers stay apart, as they were, rather than merged here (a merge moves timelines and
journeys, the pipeline's work, and would have no event to log). Such an identity keeps
its customer, but no event or lookup spells the address that way any more. They are
``SELECT * FROM identities WHERE kind = 'email' AND value IS NOT NFC NORMALIZED``.

Other kinds are opaque ids and keep their form. The ``merges`` log keeps the identifiers as
they were when it was written. Touchpoints an API of the release before put on the topic
carry the form they were sent in, and an NFD one still makes an identity of that form, so
run this (``percorso migrate``) before the new API starts, as every migration.

PostgreSQL's ``normalize`` needs a UTF8 database (the embedded server's, and initdb's with
a UTF-8 locale); in another encoding this migration fails and changes nothing. A downgrade
changes nothing: the forms the values had are not kept, and the code before reads an NFC
address as any other.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Each NFC form not stored yet goes to the oldest identity spelling it otherwise: the
    # rows rewritten are not NFC and their new values are all different, so none collides.
    op.execute(
        """
        WITH renamed AS (
            UPDATE identities i SET value = spelt.nfc
            FROM (
                SELECT DISTINCT ON (nfc) value, nfc
                FROM (
                    SELECT value, created_at, normalize(value, NFC) AS nfc FROM identities
                    WHERE kind = 'email' AND value IS NOT NFC NORMALIZED
                ) AS other
                WHERE NOT EXISTS (
                    SELECT FROM identities s WHERE s.kind = 'email' AND s.value = other.nfc
                )
                ORDER BY nfc, created_at, value
            ) AS spelt
            WHERE i.kind = 'email' AND i.value = spelt.value
            RETURNING i.customer_id
        )
        UPDATE customers SET updated_at = now() WHERE id IN (SELECT customer_id FROM renamed)
        """
    )


def downgrade() -> None:
    """Nothing to undo (see above)."""
