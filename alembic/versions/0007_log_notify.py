"""Every statement that appends to the log notifies ``tvote_log`` (delivered at commit, to listeners).

Followers (the submitter, the projector) wait on it instead of reading the log on a short timer
(``events.log_waiter``). A notification is only a hint: followers still read and verify the rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('tvote_log', '');
            RETURN NULL;
        END $$;
        CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION events_notify();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER events_notify ON events; DROP FUNCTION events_notify();")
