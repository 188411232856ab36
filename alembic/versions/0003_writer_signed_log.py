"""R13 as revised: every append signed by its writer, every unit with its command; writers, faults, ban causes.

- ``events.command``: the command a unit's first row was decided from (followers re-derive it);
  ``events.signature`` / ``signed_from``: on an append's last row, the writer's Ed25519 signature
  over the batch (its first position and last hash). Older rows have neither: they hash as before.
- ``writers``: operators and submitters admitted by the log (trustees sign as members).
- ``log_faults``: rows every honest follower treats as void (no valid writer signature, edited after
  the fact, a decision the rules do not produce), and breaks in the chain, with their reason.
- ``members.ban_*``: the violation (or reputation history) behind the *current* ban.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

APP_ROLE = "tvote_app"


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE events
            ADD COLUMN command JSONB CHECK (command IS NULL OR pg_column_size(command) <= 65536),
            ADD COLUMN signature BYTEA CHECK (signature IS NULL OR length(signature) = 64),
            ADD COLUMN signed_from BIGINT CHECK (signed_from IS NULL OR signed_from >= 1),
            ADD CONSTRAINT events_signature_range CHECK ((signature IS NULL) = (signed_from IS NULL));

        CREATE TABLE writers (
            writer      TEXT PRIMARY KEY,
            role        TEXT NOT NULL,
            public_key  TEXT NOT NULL,
            active      BOOLEAN NOT NULL,
            admitted_at TIMESTAMPTZ NOT NULL,
            revoked_at  TIMESTAMPTZ
        );

        CREATE TABLE log_faults (
            position     BIGINT PRIMARY KEY,
            writer       TEXT,
            reason       TEXT NOT NULL,
            attributable BOOLEAN NOT NULL,
            reported_at  TIMESTAMPTZ
        );
        CREATE INDEX idx_log_faults_writer ON log_faults (writer);

        ALTER TABLE members
            ADD COLUMN ban_cause TEXT,
            ADD COLUMN ban_violation_id BIGINT,
            ADD COLUMN banned_at TIMESTAMPTZ;
        """
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON writers, log_faults TO {APP_ROLE};")


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE members DROP COLUMN ban_cause, DROP COLUMN ban_violation_id, DROP COLUMN banned_at;
        DROP TABLE log_faults, writers;
        ALTER TABLE events DROP CONSTRAINT events_signature_range,
            DROP COLUMN command, DROP COLUMN signature, DROP COLUMN signed_from;
        """
    )
