"""The event log in Postgres: the one log per cluster (R13), written by every node.

Why appends take a transaction-scoped advisory lock: the log is one hash chain with gap-free
positions, so each append must read the last (position, hash) and write after it. Holding
the lock until commit also means positions become visible in order: a reader that has seen
position p has seen every position below p. A reader following the global order with
``WHERE position > last`` therefore never skips an event that commits late (the gap-skipping
problem that ``eventsourcing`` solves with LOCK TABLE ... IN EXCLUSIVE MODE, and message-db
leaves to its readers). The lock is advisory rather than a table lock so readers never
wait. Throughput comes from batching many decisions into one append, not from concurrency.

``UNIQUE(stream_id, stream_version)`` and ``UNIQUE(idempotency_key)`` remain the final word
should anything bypass the lock.

Why a write has a bound (``commit_bound_s``): on a Patroni cluster in strict synchronous mode a
commit waits for a synchronous standby, for ever when none is up. Past the bound the write is
cancelled (``events.commit_bound``) and the caller gets :class:`StoreUnavailable`, as for any outage.
A commit whose wait was cancelled is *in doubt*: Postgres committed it on the primary (readers there
see it) but no standby may have it, so it is not reported as done. The store then reads and writes
nothing until a write of its own has passed the wait (:meth:`PostgresStore._confirm`, the
``sync_barrier`` row): WAL is one sequence, so what the in-doubt commit wrote is on the standby too.
Only then may a retry find the append's idempotency keys in the log and call it DUPLICATE.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import errors as pgerr

from events.commit_bound import CommitBound, syncrep_cancelled
from events.errors import ConcurrencyConflict, StoreUnavailable
from events.store import GENESIS, Outcome, Recorded, Snapshot, Unit, UnitResult, chain_rows, plan
from events.writers import RowSigner

IDEMPOTENCY_CONSTRAINT = "events_idempotency_key"  # alembic 0001
LOG_LOCK = 0x7476_6F74_65_6C6F67 & 0x7FFF_FFFF_FFFF_FFFF  # "tvote log", an arbitrary constant
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COMMIT_BOUND_S = 5.0  # a write (its lock wait, rows and commit) still running after this is given up, in doubt
COLUMNS = (
    "position, stream_id, stream_version, event_type, schema_version, payload, recorded_at, "
    "idempotency_key, writer, prev_hash, hash, command, signature, signed_from"
)
# Binary COPY: integers, timestamps and the two hashes travel as they are (no text round trip). The
# payload is already canonical JSON; jsonb's binary input is a version byte (1) and that text, so it
# is sent as raw bytes rather than re-encoded by a JSON dumper.
COPY_TYPES = ["int8", "text", "int4", "text", "int2", "bytea", "timestamptz", "text", "text", "bytea", "bytea",
              "bytea", "bytea", "int8"]
JSONB_V1 = b"\x01"
SELECT = (
    "SELECT position, stream_id, stream_version, event_type, schema_version, payload, "
    "(extract(epoch FROM recorded_at) * 1000000)::bigint, idempotency_key, writer, prev_hash, hash, "
    "command, signature, signed_from FROM events"
)


def connect_failure(e: psycopg.OperationalError) -> str:
    """Why a connection failed (psycopg's text); a multi-host DSN that found only standbys is said so plainly.

    With ``target_session_attrs=read-write`` (a Patroni cluster's DSN) libpq refuses every read-only
    member with "session is read-only", and psycopg lists every attempt: the gist is that no member
    named in the DSN takes writes (the DSN names only standbys, or a failover is in progress).
    """
    text = str(e).strip()
    lines = [x for x in text.splitlines() if x.strip()]
    attempts = [x for x in lines if x.startswith("- host:")] or lines[:1]
    if attempts and all("read-only" in x or "hot standby" in x for x in attempts):
        return (f"no writable member: all {len(attempts)} server(s) the DSN names are read-only (standbys, or a "
                "failover in progress); target_session_attrs=read-write keeps only a primary")
    return text or type(e).__name__


def us_to_datetime(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


class PostgresStore:
    """One connection, used under a lock; make one store per thread for parallel readers."""

    def __init__(self, dsn: str, connect_timeout: float = 5, commit_bound_s: float = COMMIT_BOUND_S) -> None:
        """``commit_bound_s``: how long a write may take, its commit's wait for a synchronous standby included,
        before it is cancelled and reported as :class:`StoreUnavailable` (in doubt; see the module). Reads have
        the same bound: a stopped primary would hold them for ever on an open connection."""
        self.dsn = dsn
        self._timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._bound = CommitBound(commit_bound_s, grace_s=min(1.0, commit_bound_s))
        self._syncrep_cancelled = False  # the current connection said a commit's wait was cancelled
        # A write of ours may have committed on the primary alone: confirm before trusting anything read.
        self.unconfirmed = False
        self.stats = {"writes_bounded": 0, "in_doubt": 0, "confirmations": 0, "us_lock_wait": 0, "us_locked": 0}

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.dsn, connect_timeout=self._timeout, autocommit=False)
            except psycopg.OperationalError as e:
                raise StoreUnavailable(f"postgres unreachable: {connect_failure(e)}") from e
            self._conn.add_notice_handler(self._notice)
        return self._conn

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if syncrep_cancelled(diag):
            self._syncrep_cancelled = True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, fn, write: bool = False):
        """``fn`` in one transaction, bounded. ``write``: a commit not confirmed by the standby is in doubt.

        A read (``write`` False) must be a single statement (it runs in autocommit)."""
        with self._lock:
            if self.unconfirmed:
                self._transaction(_confirm, write=True)
                self.unconfirmed = False
                self.stats["confirmations"] += 1
            return self._transaction(fn, write)

    def _transaction(self, fn, write: bool):
        conn = self._connection()
        self._syncrep_cancelled = False
        # Reads too: a stopped primary answers no query, and a read would hang on its open connection for ever.
        token = self._bound.arm(conn)
        try:
            if write:
                result = fn(conn)
                conn.commit()
            else:
                # A read is one statement: in autocommit it is one round trip, not BEGIN, SELECT and COMMIT
                # (0.34 -> 0.20 ms for the recorder's empty catch-up read; issue 15's write path at batch 1).
                conn.autocommit = True
                try:
                    result = fn(conn)
                finally:
                    _leave_autocommit(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            fired = self._bound.disarm(token)
            self.close()
            if write:  # it may have committed before the connection dropped: in doubt
                self.unconfirmed = True
                self.stats["in_doubt"] += 1
            if fired and write:
                self.stats["writes_bounded"] += 1
                raise StoreUnavailable(f"postgres write given up after {self._bound.bound_s:g}s (in doubt: no "
                                       f"synchronous standby confirmed it, or the primary did not answer): {e}") from e
            if fired:
                raise StoreUnavailable(f"postgres read given up after {self._bound.bound_s:g}s (the server did not "
                                       f"answer): {e}") from e
            raise StoreUnavailable(f"postgres failed mid-operation: {e}") from e
        except BaseException:
            self._bound.disarm(token)
            if not conn.closed:
                conn.rollback()
            raise
        fired = self._bound.disarm(token)
        if write and (fired or self._syncrep_cancelled):
            # COMMIT succeeded, but its wait for the synchronous standby was cancelled: committed on the
            # primary only. Not durable, so not done; the retry finds it by its keys once confirmed.
            self.unconfirmed = True
            self.stats["in_doubt"] += 1
            self.stats["writes_bounded"] += 1
            raise StoreUnavailable(f"postgres commit in doubt: no synchronous standby confirmed it within "
                                   f"{self._bound.bound_s:g}s (committed on the primary, maybe on no standby)")
        return result

    def append(self, units: list[Unit], signer: RowSigner) -> list[UnitResult]:
        if not units:
            return []

        def tx(conn: psycopg.Connection, probe_keys: bool) -> list[UnitResult]:
            cur = conn.cursor()
            t0 = time.perf_counter()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK,))
            locked[0] = time.perf_counter()
            self.stats["us_lock_wait"] += int((locked[0] - t0) * 1e6)
            last = cur.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
            position, prev = (last[0], bytes(last[1])) if last else (0, GENESIS)
            streams = sorted({s for u in units for s in u.expected})
            versions = {
                s: v or 0 for s, v in cur.execute(
                    "SELECT s, (SELECT max(stream_version) FROM events WHERE stream_id = s) "
                    "FROM unnest(%s::text[]) AS s", (streams,))
            }

            def probe() -> set[str]:
                keys = [e.idempotency_key for u in units for e in u.events]
                return {r[0] for r in cur.execute(
                    "SELECT idempotency_key FROM events WHERE idempotency_key = ANY(%s)", (keys,))}

            planned = plan(units, dict(versions), probe() if probe_keys else set())
            if not probe_keys and any(r.outcome is Outcome.CONFLICT for r, _ in planned):
                # a moved stream may be our own retried unit (DUPLICATE): decide with the keys the log holds
                planned = plan(units, dict(versions), probe())
            now_us = time.time_ns() // 1000
            recorded_at = us_to_datetime(now_us)
            rows, results = chain_rows(planned, position, prev, now_us, signer)
            writer = signer.writer
            with cur.copy(f"COPY events ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(COPY_TYPES)
                for r in rows:
                    e = r.event
                    copy.write_row((r.position, e.stream_id, r.version, e.event_type, e.schema_version,
                                    JSONB_V1 + e.body, recorded_at, e.idempotency_key, writer, r.prev_hash, r.hash,
                                    JSONB_V1 + e.command if e.command else None, r.signature, r.signed_from))
            return results

        locked = [0.0]  # when the log lock was granted: how long an append holds it (issue 15, under load)
        # Optimistic first: a new unit's keys are almost never in the log, and probing for them costs
        # ~10 % of an append. If one is (a retried append), the unique index refuses the whole COPY,
        # nothing is written, and the append is planned again against the keys the log holds.
        try:
            try:
                try:
                    return self._run(lambda conn: tx(conn, probe_keys=False), write=True)
                except pgerr.UniqueViolation as e:
                    if e.diag.constraint_name != IDEMPOTENCY_CONSTRAINT:
                        raise
                    return self._run(lambda conn: tx(conn, probe_keys=True), write=True)
            finally:
                if locked[0]:
                    self.stats["us_locked"] += int((time.perf_counter() - locked[0]) * 1e6)
        except (pgerr.UniqueViolation, pgerr.ExclusionViolation) as e:
            raise ConcurrencyConflict(f"the log refused a duplicate: {e.diag.message_primary}") from e

    def read_all(self, after: int = 0, limit: int = 1000) -> list[Recorded]:
        return self._run(lambda conn: read_after(conn, after, limit))

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[Recorded]:
        def q(conn: psycopg.Connection) -> list[Recorded]:
            rows = conn.execute(
                SELECT + " WHERE stream_id = %s AND stream_version > %s ORDER BY stream_version",
                (stream_id, after_version),
            )
            return [_recorded(r) for r in rows]

        return self._run(q)

    def read_streams_prefix(self, prefix: str) -> list[Recorded]:
        """Every event of the streams whose id starts with ``prefix``, in log order."""

        def q(conn: psycopg.Connection) -> list[Recorded]:
            rows = conn.execute(SELECT + " WHERE stream_id LIKE %s ORDER BY position", (prefix + "%",))
            return [_recorded(r) for r in rows]

        return self._run(q)

    def stream_versions(self, stream_ids: list[str]) -> dict[str, int]:
        def q(conn: psycopg.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT s, (SELECT max(stream_version) FROM events WHERE stream_id = s) "
                "FROM unnest(%s::text[]) AS s", (list(stream_ids),))
            return {s: v or 0 for s, v in rows}

        return self._run(q)

    def has_keys(self, keys: list[str]) -> set[str]:
        def q(conn: psycopg.Connection) -> set[str]:
            rows = conn.execute("SELECT idempotency_key FROM events WHERE idempotency_key = ANY(%s)", (keys,))
            return {r[0] for r in rows}

        return self._run(q)

    def row_hash(self, position: int) -> bytes | None:
        row = self._run(lambda conn: conn.execute("SELECT hash FROM events WHERE position = %s",
                                                  (position,)).fetchone())
        return bytes(row[0]) if row else None

    def save_snapshot(self, snap: Snapshot, keep: int = 2) -> None:
        def tx(conn: psycopg.Connection) -> None:
            conn.execute("INSERT INTO snapshots (owner, position, hash, state, signature) VALUES (%s, %s, %s, %s, %s) "
                         "ON CONFLICT (owner, position) DO NOTHING",
                         (snap.owner, snap.position, snap.hash, snap.state, snap.signature))
            conn.execute("DELETE FROM snapshots WHERE owner = %s AND position NOT IN (SELECT position FROM snapshots "
                         "WHERE owner = %s ORDER BY position DESC LIMIT %s)", (snap.owner, snap.owner, keep))

        self._run(tx, write=True)

    def snapshots(self, owner: str) -> list[Snapshot]:
        rows = self._run(lambda conn: conn.execute(
            "SELECT owner, position, hash, state, signature FROM snapshots WHERE owner = %s ORDER BY position DESC",
            (owner,)).fetchall())
        return [Snapshot(o, p, bytes(h), bytes(s), bytes(g) if g is not None else None) for o, p, h, s, g in rows]

    def last_position(self) -> int:
        return self._run(lambda conn: conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])


def _leave_autocommit(conn: psycopg.Connection) -> None:
    """Back to transactions after a read; a connection that cannot say so is closed, never left in autocommit
    (an append there would commit statement by statement and let go of the log lock after the first)."""
    try:
        conn.autocommit = False
    except psycopg.Error:
        conn.close()


def _confirm(conn: psycopg.Connection) -> None:
    """A write whose commit waits for the synchronous standby: once it returns, the standby holds every
    commit before it (WAL is one sequence), ours in doubt included."""
    conn.execute("UPDATE sync_barrier SET confirmations = confirmations + 1 WHERE id = 1")


def read_after(conn: psycopg.Connection | psycopg.Cursor, after: int, limit: int) -> list[Recorded]:
    """The log's rows after ``after``, in order, on the caller's connection and transaction.

    For readers that must see the log and their own tables in one transaction (the projector).
    """
    rows = conn.execute(SELECT + " WHERE position > %s ORDER BY position LIMIT %s", (after, limit))
    return [_recorded(r) for r in rows]


def read_stream_on(conn: psycopg.Connection | psycopg.Cursor, stream_id: str) -> list[Recorded]:
    """One stream's rows, in order, on the caller's connection and transaction (a follower's loader)."""
    rows = conn.execute(SELECT + " WHERE stream_id = %s ORDER BY stream_version", (stream_id,))
    return [_recorded(r) for r in rows]


def _recorded(r: tuple) -> Recorded:
    return Recorded(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), r[7], r[8], bytes(r[9]), bytes(r[10]),
                    r[11], bytes(r[12]) if r[12] is not None else None, r[13])
