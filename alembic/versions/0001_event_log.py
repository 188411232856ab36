"""The event log: one append-only table, hash-chained, that the service role can only read and insert.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APP_ROLE = "tvote_app"


def upgrade() -> None:
    op.execute(
        f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} LOGIN;
            END IF;
        END $$;
        """
    )
    op.execute(
        """
        CREATE TABLE events (
            position        BIGINT PRIMARY KEY CHECK (position >= 1),
            stream_id       TEXT NOT NULL CHECK (length(stream_id) BETWEEN 1 AND 200),
            stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
            event_type      TEXT NOT NULL,
            schema_version  SMALLINT NOT NULL CHECK (schema_version >= 1),
            payload         JSONB NOT NULL CHECK (pg_column_size(payload) <= 65536),
            recorded_at     TIMESTAMPTZ NOT NULL,
            idempotency_key TEXT NOT NULL,
            writer          TEXT NOT NULL,
            prev_hash       BYTEA NOT NULL CHECK (length(prev_hash) = 32),
            hash            BYTEA NOT NULL CHECK (length(hash) = 32),
            CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
            CONSTRAINT events_idempotency_key UNIQUE (idempotency_key)
        );
        CREATE INDEX events_type_idx ON events (event_type);

        -- The log is immutable: no role may change or remove a recorded event. The trigger
        -- stops even the owner; only a superuser who disables it can tamper, and then
        -- `audit verify` names the first event whose hash no longer chains.
        CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the event log is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
            FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
        CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
            FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();
        """
    )
    op.execute(f"REVOKE ALL ON events FROM PUBLIC; GRANT SELECT, INSERT ON events TO {APP_ROLE};")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE};")


def downgrade() -> None:
    op.execute("DROP TABLE events; DROP FUNCTION events_refuse_change();")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {APP_ROLE};")
