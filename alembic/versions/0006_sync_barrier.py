"""A one-row table a writer updates to learn that everything the primary holds is on a synchronous standby.

Why: a commit whose wait for the synchronous standby was cancelled (``events.postgres_store``'s commit
bound) is committed on the primary and visible to every reader there, yet may be on no standby. A
writer that had one such commit in doubt reads nothing until it has committed a write of its own with
that wait passed: WAL is one sequence, so the standby then holds everything before it too. The write
must produce WAL and a transaction id (a read-only transaction commits without waiting), hence a row.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

APP_ROLE = "tvote_app"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE sync_barrier (
            id             SMALLINT PRIMARY KEY CHECK (id = 1),
            confirmations  BIGINT NOT NULL
        );
        INSERT INTO sync_barrier VALUES (1, 0);
        """
    )
    op.execute(f"GRANT SELECT, UPDATE ON sync_barrier TO {APP_ROLE};")


def downgrade() -> None:
    op.execute("DROP TABLE sync_barrier;")
