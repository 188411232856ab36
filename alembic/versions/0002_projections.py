"""Projections of the log (seed section 7.3, adapted) and the projector's tracking position.

Adaptations, written down in docs/decisions.md: values are u64 (R2), so NUMERIC(20,0) rather
than BIGINT; violation ids are the event's log position, so a replay rebuilds them row for
row (R12); the nonce is unique per (chain, sender), and NULL until a transaction is signed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from alembic import op
from events.vocab import TxStatus, ViolationKind, sql_in

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

APP_ROLE = "tvote_app"
TABLES = (
    "tx_state", "vote_counts", "vote_history", "byzantine_violations", "node_reputation", "members",
    "blockchain_submissions", "blockchain_submissions_archive", "vote_history_archive", "projector_tracking",
)


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE tx_state (
            tx_id            TEXT PRIMARY KEY,
            status           TEXT NOT NULL CHECK (status IN {sql_in(TxStatus)}),
            value            NUMERIC(20, 0),
            certificate_hash TEXT,
            abort_reason     TEXT,
            opened_at        TIMESTAMPTZ,
            deadline_at      TIMESTAMPTZ,
            decided_at       TIMESTAMPTZ,
            closed_at        TIMESTAMPTZ,
            last_position    BIGINT NOT NULL
        );
        CREATE INDEX idx_tx_state_status ON tx_state (status);

        CREATE TABLE vote_counts (
            tx_id TEXT NOT NULL,
            value NUMERIC(20, 0) NOT NULL,
            count INTEGER NOT NULL CHECK (count >= 0),
            PRIMARY KEY (tx_id, value)
        );

        CREATE TABLE vote_history (
            tx_id        TEXT NOT NULL,
            node_id      TEXT NOT NULL,
            peer_id      TEXT NOT NULL,
            value        NUMERIC(20, 0) NOT NULL,
            signature    BYTEA NOT NULL,
            vote_ts_ms   BIGINT NOT NULL,
            received_at  TIMESTAMP NOT NULL,
            position     BIGINT NOT NULL,
            PRIMARY KEY (tx_id, node_id)
        );
        CREATE INDEX idx_vote_history_received_at ON vote_history (received_at);
        CREATE TABLE vote_history_archive (LIKE vote_history INCLUDING ALL);

        CREATE TABLE byzantine_violations (
            id             BIGINT PRIMARY KEY,
            peer_id        TEXT NOT NULL,
            node_id        TEXT,
            tx_id          TEXT NOT NULL,
            violation_type TEXT NOT NULL CHECK (violation_type IN {sql_in(ViolationKind)}),
            evidence_json  JSONB NOT NULL,
            detected_at    TIMESTAMP NOT NULL
        );
        CREATE INDEX idx_violations_peer_id ON byzantine_violations (peer_id);
        CREATE INDEX idx_violations_tx_id ON byzantine_violations (tx_id);
        CREATE INDEX idx_violations_detected_at ON byzantine_violations (detected_at);

        CREATE TABLE members (
            node_id     TEXT PRIMARY KEY,
            peer_id     TEXT NOT NULL,
            vote_key    TEXT NOT NULL,
            active      BOOLEAN NOT NULL,
            banned      BOOLEAN NOT NULL DEFAULT false,
            ban_reason  TEXT,
            admitted_at TIMESTAMPTZ NOT NULL,
            removed_at  TIMESTAMPTZ
        );

        CREATE TABLE node_reputation (
            peer_id          TEXT PRIMARY KEY,
            node_id          TEXT NOT NULL,
            reputation_score DOUBLE PRECISION NOT NULL DEFAULT 1.0 CHECK (reputation_score BETWEEN 0.0 AND 1.0),
            total_votes      BIGINT NOT NULL DEFAULT 0,
            violations_count INTEGER NOT NULL DEFAULT 0,
            last_seen        TIMESTAMP NOT NULL
        );
        CREATE INDEX idx_reputation_score ON node_reputation (reputation_score);

        CREATE TABLE blockchain_submissions (
            tx_id         TEXT PRIMARY KEY,
            value         NUMERIC(20, 0) NOT NULL,
            state         TEXT NOT NULL CHECK (state IN ('PENDING', 'CONFIRMED', 'ABORTED_BYZANTINE')),
            submitter     TEXT NOT NULL,
            lock_revision BIGINT NOT NULL,
            chain_id      BIGINT,
            sender        TEXT,
            nonce         BIGINT,
            tx_hash       TEXT,
            attempts      INTEGER NOT NULL DEFAULT 0,
            submitted_at  TIMESTAMP,
            confirmed_at  TIMESTAMP,
            block_number  BIGINT,
            UNIQUE (chain_id, sender, nonce)
        );
        CREATE INDEX idx_submissions_state ON blockchain_submissions (state);
        CREATE INDEX idx_submissions_submitted_at ON blockchain_submissions (submitted_at);
        CREATE TABLE blockchain_submissions_archive (LIKE blockchain_submissions INCLUDING ALL);

        CREATE TABLE projector_tracking (
            name     TEXT PRIMARY KEY,
            position BIGINT NOT NULL
        );
        """
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TABLES)} TO {APP_ROLE};")


def downgrade() -> None:
    op.execute("DROP TABLE " + ", ".join(TABLES) + ";")
