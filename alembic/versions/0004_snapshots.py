"""Snapshots of a reader's folded state at a log position: restart without folding the log from 0.

Each row belongs to one owner (a node, the submitter, a projector), holds the log's hash at its
position (a snapshot that does not match the log is refused) and, for writers, their signature over
it (a node trusts only a snapshot it made itself). Replays and audits never read them (R12).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APP_ROLE = "tvote_app"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE snapshots (
            owner      TEXT NOT NULL,
            position   BIGINT NOT NULL CHECK (position >= 1),
            hash       BYTEA NOT NULL CHECK (length(hash) = 32),
            state      BYTEA NOT NULL,
            signature  BYTEA,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (owner, position)
        );
        """
    )
    op.execute(f"GRANT SELECT, INSERT, DELETE ON snapshots TO {APP_ROLE};")


def downgrade() -> None:
    op.execute("DROP TABLE snapshots;")
