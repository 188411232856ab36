"""The projector: folds the log into the SQL tables operators query (seed section 7.3).

Exactly once, resumable after kill -9: each batch is read, applied and its last position
stored in ``projector_tracking`` inside *one* Postgres transaction, so a crash leaves either
the whole batch or none of it. Batches from several projector processes never interleave
(a transaction-scoped advisory lock, plus the tracking row read FOR UPDATE), so running two
is safe, merely useless.

Rows depend on the events alone, never on the clock at projection time (timestamps come
from ``recorded_at``, violation ids are log positions), so a replay into empty tables
rebuilds them row for row (R12). The same code runs live and for ``replay``.

Per batch: load the current rows of the entities the batch touches, apply the events to
them in Python, write them back with one upsert per table. A batch of thousands of events
costs a handful of statements.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from events import model as m
from events import snapshot
from events.errors import InvalidCommand, UnknownEvent
from events.follow import Follower, Settled
from events.log_waiter import LogWaiter
from events.model import tx_stream
from events.postgres_store import read_after, read_stream_on, us_to_datetime
from events.store import Recorded
from events.vocab import AbortReason, TxStatus, ViolationKind
from projections.metrics import EventMetrics

log = logging.getLogger(__name__)
SNAPSHOT_EVERY = 50_000  # log rows between two snapshots of the projector's follower
RETAIN_FINAL = 10_000  # finished transactions the projector's follower keeps in memory (events.follow)
PROJECTOR_LOCK = 0x7076_6A63  # "pvjc": one projector per database at a time
DEFAULT_NAME = "main"
Row = dict[str, Any]


@dataclass
class Tables:
    """The rows a batch touches, keyed by primary key, plus the insert-only ones."""

    tx_state: dict[str, Row] = field(default_factory=dict)
    vote_counts: dict[tuple[str, int], Row] = field(default_factory=dict)
    members: dict[str, Row] = field(default_factory=dict)
    node_reputation: dict[str, Row] = field(default_factory=dict)
    submissions: dict[str, Row] = field(default_factory=dict)
    vote_history: list[Row] = field(default_factory=list)
    violations: list[Row] = field(default_factory=list)
    withdrawn: list[tuple[str, str, datetime]] = field(default_factory=list)  # (tx_id, node_id, at): silences
    peer_of: dict[str, str] = field(default_factory=dict)  # node_id -> peer_id
    writers: dict[str, Row] = field(default_factory=dict)
    faults: dict[int, Row] = field(default_factory=dict)  # position -> log_faults row
    ban_causes: dict[str, int] = field(default_factory=dict)  # idempotency key -> log position (this batch)


def naive(dt: datetime) -> datetime:
    return dt.replace(tzinfo=None)  # the seed's TIMESTAMP columns hold UTC without a zone


class Projector:
    def __init__(self, dsn: str, name: str = DEFAULT_NAME, schema: str | None = None) -> None:
        self.dsn = dsn
        self.name = name
        self.schema = schema  # replay projects into a fresh schema; the log stays in public
        self.healthy_at = time.monotonic()
        self._connect()
        self.lock_key = PROJECTOR_LOCK if not schema else zlib.crc32(schema.encode())
        self._follower: Follower | None = None
        self._snapshot_at = 0
        # Only the live projector feeds the metrics (a replay must not count twice); a restart
        # primes its gauges from the tables instead of re-counting the log.
        self.metrics: EventMetrics | None = None
        if schema is None:
            self.metrics = EventMetrics(projector=name)
            self.metrics.prime_from_db(self.conn, self.position())
            self.conn.commit()  # end the read: each batch must run in a transaction of its own

    def _connect(self) -> None:
        self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
        if self.schema:
            self.conn.execute(f'SET search_path TO "{self.schema}", public')
        self.conn.autocommit = False
        self._follower = None  # rebuilt from the tracking position

    def close(self) -> None:
        self.conn.close()

    def pause_others(self) -> None:
        """Hold the projection lock for this session: every other projector waits (for replay)."""
        self.conn.execute("SELECT pg_advisory_lock(%s)", (self.lock_key,))
        self.conn.commit()

    def position(self) -> int:
        row = self.conn.execute("SELECT position FROM projector_tracking WHERE name = %s", (self.name,)).fetchone()
        self.conn.commit()
        return row[0] if row else 0

    def run_once(self, batch: int = 5000, until: int | None = None) -> int:
        """Project one batch; returns how many log rows it read (0: caught up).

        The rows go through a ``Follower`` first (R13): only what every honest follower applies is
        projected; void rows land in ``log_faults``. The tracking position is the last *settled* row.
        """
        try:
            with self.conn.transaction():
                cur = self.conn.cursor()
                # One batch at a time per database, whoever runs it; `replay` holds the same lock at
                # session level to pause every live projector while it compares.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (self.lock_key,))
                row = cur.execute(
                    "SELECT position FROM projector_tracking WHERE name = %s FOR UPDATE", (self.name,)
                ).fetchone()
                pos = row[0] if row else 0
                follower = self._follower_at(cur, pos)
                limit = batch if until is None else max(0, min(batch, until - follower.read))
                if limit == 0:
                    return 0
                rows = read_after(cur, follower.read, limit)
                if not rows:
                    return 0
                settled = follower.feed(rows)
                for segment in _segments(settled):
                    t = self._load(cur, [s.row for s in segment if s.event is not None])
                    for s in segment:
                        if s.event is not None:
                            apply(t, s.row)
                        elif s.void is not None:
                            t.faults[s.void.position] = {
                                "position": s.void.position, "writer": s.void.writer, "reason": s.void.reason[:500],
                                "attributable": s.void.attributable, "reported_at": None}
                    self._write(cur, t)
                    last = segment[-1]
                    if last.event is not None and isinstance(last.event, m.RetentionApplied):
                        _archive(cur, last.event)
                cur.execute(
                    "INSERT INTO projector_tracking (name, position) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
                    (self.name, follower.position),
                )
                self._maybe_snapshot(cur, follower)
        except BaseException:
            self._follower = None  # rolled back: rebuild it from the tracking position next time
            raise
        if self.metrics is not None:  # after the commit: a rolled-back batch is not counted
            self.metrics.observe([s.row for s in settled if s.event is not None])
            self.metrics.void([s.void for s in settled if s.void is not None])
        return len(rows)

    def _follower_at(self, cur: psycopg.Cursor, position: int) -> Follower:
        """The follower's state at the tracking position: kept between batches, rebuilt after a restart.

        Every row up to a tracking position is settled (a batch commits a settled position), so
        folding them again gives the same verdicts, without projecting anything.
        """
        f = self._follower
        if f is not None and f.position == position:
            return f
        f = Follower(retain_final=RETAIN_FINAL, loader=lambda tx_id: read_stream_on(self.conn, tx_stream(tx_id)))
        if self.schema is None:  # the live projector starts from its snapshot; a replay always from 0 (R12)
            self._from_snapshot(cur, f, position)
        while f.read < position:
            rows = read_after(cur, f.read, min(5000, position - f.read))
            if not rows:
                break
            f.feed(rows)
        self._follower = f
        return f

    def catch_up(self, until: int | None = None, batch: int = 5000) -> int:
        n = 0
        while k := self.run_once(batch, until):
            n += k
            if until is not None and self._follower is not None and self._follower.read >= until:
                break
        return n

    def follow(self, stop: Callable[[], bool], idle_sleep: float = 0.05, batch: int = 5000,
               max_backoff: float = 5.0, waiter: LogWaiter | None = None, idle_wait: float = 1.0) -> None:
        """Project forever (the projector process), until ``stop()`` says so.

        Caught up, it sleeps ``idle_sleep``, or with a ``waiter`` until the log moves (at most ``idle_wait``).

        A lost Postgres (a restart, a failover) is waited out: reconnect with backoff, then go on from the
        tracking position, which only ever moved with a committed batch. ``healthy_at`` tells a supervisor
        when a batch last went through.
        """
        backoff = 0.1
        while not stop():
            try:
                if self.conn.closed:
                    self._connect()
                n = self.run_once(batch)
                self.healthy_at = time.monotonic()
                backoff = 0.1
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                log.warning("projector lost Postgres (%s); reconnecting in %.1fs", str(e).strip()[:120], backoff)
                with contextlib.suppress(Exception):
                    self.conn.close()
                time.sleep(backoff)
                backoff = min(max_backoff, backoff * 2)
                continue
            if n == 0:
                if waiter is not None:
                    waiter.wait(idle_wait)
                else:
                    time.sleep(idle_sleep)

    # snapshots of the follower (bounded restart time) -----------------------------------------

    @property
    def owner(self) -> str:
        return f"projector:{self.name}"

    def _from_snapshot(self, cur: psycopg.Cursor, f: Follower, position: int) -> None:
        row = cur.execute("SELECT s.position, s.hash, s.state, e.hash FROM snapshots s LEFT JOIN events e "
                          "ON e.position = s.position WHERE s.owner = %s AND s.position <= %s "
                          "ORDER BY s.position DESC LIMIT 1", (self.owner, position)).fetchone()
        if row is None:
            return
        at, want, state, have = row[0], bytes(row[1]), bytes(row[2]), bytes(row[3]) if row[3] else None
        if have != want:
            log.error("projector snapshot at %d refused: the log's hash there differs; folding from 0", at)
            return
        try:
            snapshot.decode(state, f)
        except snapshot.SnapshotMismatch as e:
            log.error("projector snapshot at %d refused: %s; folding from 0", at, e)
            f.__init__(retain_final=f.retain_final, loader=f.loader)  # type: ignore[misc]  # back to an empty fold

    def _maybe_snapshot(self, cur: psycopg.Cursor, f: Follower) -> None:
        if self.schema is not None or f.waiting or f.position - self._snapshot_at < SNAPSHOT_EVERY:
            return
        cur.execute("INSERT INTO snapshots (owner, position, hash, state) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (owner, position) DO NOTHING",
                    (self.owner, f.position, f.prev_hash, snapshot.encode(f)))
        cur.execute("DELETE FROM snapshots WHERE owner = %s AND position NOT IN (SELECT position FROM snapshots "
                    "WHERE owner = %s ORDER BY position DESC LIMIT 2)", (self.owner, self.owner))
        self._snapshot_at = f.position

    # loading and writing ----------------------------------------------------------------------

    def _load(self, cur: psycopg.Cursor, events: list[Recorded]) -> Tables:
        t = Tables()
        txs = sorted({e.payload["tx_id"] for e in events if "tx_id" in e.payload})
        for r in cur.execute("SELECT * FROM tx_state WHERE tx_id = ANY(%s)", (txs,)):
            t.tx_state[r[0]] = _row(cur, r)
        for r in cur.execute("SELECT * FROM vote_counts WHERE tx_id = ANY(%s)", (txs,)):
            t.vote_counts[(r[0], int(r[1]))] = _row(cur, r)
        for r in cur.execute("SELECT * FROM blockchain_submissions WHERE tx_id = ANY(%s)", (txs,)):
            t.submissions[r[0]] = _row(cur, r)
        # members are few (N): load them all, they map node ids to peer ids for every table
        for r in cur.execute("SELECT * FROM members"):
            row = _row(cur, r)
            t.members[row["node_id"]] = row
            t.peer_of[row["node_id"]] = row["peer_id"]
        for r in cur.execute("SELECT * FROM node_reputation"):
            row = _row(cur, r)
            t.node_reputation[row["peer_id"]] = row
        for r in cur.execute("SELECT * FROM writers"):
            row = _row(cur, r)
            t.writers[row["writer"]] = row
        reported = [e.payload["position"] for e in events if e.event_type == m.InvalidEntryReported.TYPE]
        for r in cur.execute("SELECT * FROM log_faults WHERE position = ANY(%s)", (reported,)):
            t.faults[r[0]] = _row(cur, r)
        causes = [e.payload["cause"] for e in events if e.event_type == m.NodeBanned.TYPE]
        for key, position in cur.execute(
                "SELECT idempotency_key, position FROM events WHERE idempotency_key = ANY(%s)", (causes,)):
            t.ban_causes[key] = position
        return t

    def _write(self, cur: psycopg.Cursor, t: Tables) -> None:
        _upsert(cur, "tx_state", ["tx_id"], list(t.tx_state.values()))
        _upsert(cur, "vote_counts", ["tx_id", "value"], list(t.vote_counts.values()))
        _upsert(cur, "members", ["node_id"], list(t.members.values()))
        _upsert(cur, "node_reputation", ["peer_id"], list(t.node_reputation.values()))
        _upsert(cur, "blockchain_submissions", ["tx_id"], list(t.submissions.values()))
        _insert(cur, "vote_history", t.vote_history)
        _insert(cur, "byzantine_violations", t.violations)
        for tx_id, node_id, at in t.withdrawn:
            cur.execute("UPDATE byzantine_violations SET withdrawn_at = %s WHERE tx_id = %s AND node_id = %s "
                        "AND violation_type = %s AND withdrawn_at IS NULL",
                        (at, tx_id, node_id, ViolationKind.SILENT_FAILURE.value))
        _upsert(cur, "writers", ["writer"], list(t.writers.values()))
        _upsert(cur, "log_faults", ["position"], list(t.faults.values()))


def _archive(cur: psycopg.Cursor, e: m.RetentionApplied) -> None:
    """Move rows older than the event's cutoffs to the archive tables (seed Algorithm 7, steps 3-4)."""
    subs, votes = (naive(us_to_datetime(ms * 1000)) for ms in (e.submissions_before_ms, e.votes_before_ms))
    cur.execute("WITH moved AS (DELETE FROM blockchain_submissions WHERE state = 'CONFIRMED' "
                "AND confirmed_at < %s RETURNING *) INSERT INTO blockchain_submissions_archive SELECT * FROM moved",
                (subs,))
    cur.execute("WITH moved AS (DELETE FROM vote_history WHERE received_at < %s RETURNING *) "
                "INSERT INTO vote_history_archive SELECT * FROM moved", (votes,))


def _row(cur: psycopg.Cursor, r: tuple) -> Row:
    return {d.name: v for d, v in zip(cur.description, r, strict=True)}


def _upsert(cur: psycopg.Cursor, table: str, pk: list[str], rows: list[Row]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in pk) or f"{pk[0]} = EXCLUDED.{pk[0]}"
    sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "
           f"ON CONFLICT ({', '.join(pk)}) DO UPDATE SET {updates}")
    cur.executemany(sql, [tuple(_sql(r[c]) for c in cols) for r in rows])


def _insert(cur: psycopg.Cursor, table: str, rows: list[Row]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
        for r in rows:
            copy.write_row(tuple(_sql(r[c]) for c in cols))


def _sql(v: Any) -> Any:
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


# --- the fold: one event into the touched rows ---------------------------------------------------


class ProjectionError(InvalidCommand):
    """An event the tables cannot hold (it names a member or transaction no earlier event created).

    The decider never writes one; a log that holds one was written by something else, and the
    projector stops on it loudly (``audit verify`` says more) rather than guess.
    """


def apply(t: Tables, r: Recorded) -> None:
    try:
        _apply(t, r)
    except KeyError as e:
        raise ProjectionError(f"event {r.position} ({r.event_type}) names unknown {e.args[0]!r:.80}") from None
    except ValueError as e:  # a name outside events.vocab
        raise ProjectionError(f"event {r.position} ({r.event_type}): {e}") from None
    except OverflowError as e:  # a time no timestamp column holds (the decider never writes one; fuzz found it)
        raise ProjectionError(f"event {r.position} ({r.event_type}) holds a time outside the calendar: {e}") from None


def _apply(t: Tables, r: Recorded) -> None:
    e = r.event()
    at = us_to_datetime(r.recorded_at_us)
    match e:
        case m.MemberAdmitted():
            t.members[e.node_id] = {"node_id": e.node_id, "peer_id": e.peer_id, "vote_key": e.vote_key,
                                    "active": True, "banned": False, "ban_reason": None,
                                    "admitted_at": at, "removed_at": None, "ban_cause": None,
                                    "ban_violation_id": None, "banned_at": None}
            t.peer_of[e.node_id] = e.peer_id
            t.node_reputation.setdefault(e.peer_id, {
                "peer_id": e.peer_id, "node_id": e.node_id, "reputation_score": 1.0, "total_votes": 0,
                "violations_count": 0, "last_seen": naive(at)})
        case m.MemberRemoved():
            t.members[e.node_id].update(active=False, removed_at=at)
        case m.NodeBanned():  # the cause behind the *current* ban: the violation (or report) that caused it
            t.members[e.node_id].update(banned=True, ban_reason=e.reason, ban_cause=e.cause,
                                        ban_violation_id=t.ban_causes.get(e.cause), banned_at=at)
        case m.NodeUnbanned():
            t.members[e.node_id].update(banned=False, ban_reason=None, ban_cause=None, ban_violation_id=None,
                                        banned_at=None)
        case m.WriterAdmitted():
            t.writers[e.writer] = {"writer": e.writer, "role": e.role, "public_key": e.public_key, "active": True,
                                   "admitted_at": at, "revoked_at": None}
        case m.WriterRevoked():
            t.writers[e.writer].update(active=False, revoked_at=at)
        case m.InvalidEntryReported():
            t.faults.setdefault(e.position, {"position": e.position, "writer": e.writer, "reason": e.reason[:500],
                                             "attributable": True}).update(reported_at=at)
        case m.ReputationChanged():
            t.node_reputation[t.peer_of[e.node_id]]["reputation_score"] = e.score / 1000
        case m.TransactionOpened():
            t.tx_state[e.tx_id] = {
                "tx_id": e.tx_id, "status": TxStatus.COLLECTING, "value": None, "certificate_hash": None,
                "abort_reason": None, "opened_at": us_to_datetime(e.opened_at_ms * 1000),
                "deadline_at": us_to_datetime(e.deadline_at_ms * 1000), "decided_at": None, "closed_at": None,
                "last_position": r.position}
        case m.VoteAccepted():
            peer = t.peer_of[e.node_id]
            t.vote_history.append({
                "tx_id": e.tx_id, "node_id": e.node_id, "peer_id": peer, "value": Decimal(e.value),
                "signature": bytes.fromhex(e.vote["signature"]), "vote_ts_ms": e.vote["timestamp_ms"],
                "received_at": naive(at), "position": r.position})
            key = (e.tx_id, e.value)
            row = t.vote_counts.setdefault(key, {"tx_id": e.tx_id, "value": Decimal(e.value), "count": 0})
            row["count"] += 1
            rep = t.node_reputation[peer]
            rep["total_votes"] += 1
            rep["last_seen"] = max(rep["last_seen"], naive(at))
        case m.ViolationDetected():
            t.violations.append({
                "id": r.position, "peer_id": e.peer_id, "node_id": e.node_id, "tx_id": e.tx_id,
                "violation_type": e.kind, "evidence_json": e.evidence, "detected_at": naive(at),
                "withdrawn_at": None})
            if e.peer_id in t.node_reputation:
                t.node_reputation[e.peer_id]["violations_count"] += 1
        case m.SilenceWithdrawn():
            t.withdrawn.append((e.tx_id, e.node_id, naive(at)))
            t.node_reputation[t.peer_of[e.node_id]]["violations_count"] -= 1
        case m.ThresholdReached():
            t.tx_state[e.tx_id].update(status=TxStatus.THRESHOLD_REACHED, value=Decimal(e.value),
                                       certificate_hash=e.certificate_hash, decided_at=at)
        case m.TransactionAborted():
            t.tx_state[e.tx_id].update(status=AbortReason(e.reason).status, abort_reason=e.detail, closed_at=at)
        case m.TransactionExpired():
            t.tx_state[e.tx_id].update(status=TxStatus.EXPIRED, closed_at=at)
        case m.SubmissionStarted():
            t.tx_state[e.tx_id].update(status=TxStatus.SUBMITTING)
            sub = t.submissions.setdefault(e.tx_id, {
                "tx_id": e.tx_id, "value": Decimal(e.value), "state": "PENDING", "submitter": e.submitter,
                "lock_revision": e.lock_revision, "chain_id": None, "sender": None, "nonce": None,
                "tx_hash": None, "attempts": 0, "submitted_at": None, "confirmed_at": None, "block_number": None})
            sub.update(submitter=e.submitter, lock_revision=e.lock_revision)
        case m.SubmissionSigned():
            t.submissions[e.tx_id].update(chain_id=e.chain_id, sender=e.sender, nonce=e.nonce, tx_hash=e.tx_hash)
            t.submissions[e.tx_id]["attempts"] += 1
        case m.SubmissionBroadcast():
            sub = t.submissions[e.tx_id]
            sub.update(tx_hash=e.tx_hash, submitted_at=sub["submitted_at"] or naive(at))
        case m.SubmissionConfirmed():
            t.submissions[e.tx_id].update(state="CONFIRMED", tx_hash=e.tx_hash, confirmed_at=naive(at),
                                          block_number=e.block_number)
            t.tx_state[e.tx_id].update(status=TxStatus.CONFIRMED, closed_at=at)
        case m.ClusterConfigured() | m.DeadlinePassed() | m.SubmissionFailed() | m.RetentionApplied():
            pass  # no table holds them (retention acts in Projector.run_once, after the batch's rows)
        case _:
            raise UnknownEvent(e)
    tx_id = getattr(e, "tx_id", None)
    if tx_id is not None and tx_id in t.tx_state:
        t.tx_state[tx_id]["last_position"] = r.position


def _segments(settled: list[Settled]) -> list[list[Settled]]:
    """The batch split after each RetentionApplied: retention acts on the rows written before it."""
    out: list[list[Settled]] = [[]]
    for s in settled:
        out[-1].append(s)
        if isinstance(s.event, m.RetentionApplied):
            out.append([])
    return [seg for seg in out if seg]
