"""A SILENT_FAILURE can be withdrawn (R9: a vote signed before the deadline that reached the log late).

The violation stays in the table, as it stays in the log; ``withdrawn_at`` says it is no longer in force.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE byzantine_violations ADD COLUMN withdrawn_at TIMESTAMP;")


def downgrade() -> None:
    op.execute("ALTER TABLE byzantine_violations DROP COLUMN withdrawn_at;")
