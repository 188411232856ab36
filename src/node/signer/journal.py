"""The signing journal: one SQLite file (WAL, synchronous=FULL) beside the key, bound to it.

Why SQLite and not an append-only file: the journal needs a durable, atomic group commit
(many votes, one fsync), lookups by tx_id without holding every vote in memory, and a
recovery story after a kill at any byte. SQLite's WAL gives all three, is tested far beyond
what a home-made log format would be, and ``PRAGMA integrity_check`` finds a damaged file.
With ``synchronous=FULL`` a WAL commit returns only after the WAL is fsync'd; a kill -9
before that leaves the transaction absent, never half there.

A journal is created complete or not at all: built under a temporary name, fsync'd, then
linked into place and the directory fsync'd. So a file at the journal's path is always a
whole journal, and an empty or short one is damage (refused), never "not created yet".

Every check here runs at open and refuses to start rather than repair: a journal that
cannot be trusted must be looked at by an operator, because signing over it could double-sign.
The caller holds the journal's local lock (``lock.py``) for as long as a Journal is open.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import nacl.signing

from events.errors import show
from events.vote import DOMAIN_TAG, SignedVote, check_node_id

from .core import check_order, row_vote, u64_text, verify_row
from .errors import InterchangeConflict, JournalCorrupt, JournalMissing, JournalUnavailable, WrongJournal
from .lock import check_private

APPLICATION_ID = 0x74765347  # "tvSG" in the SQLite header: this file is a signer journal
SCHEMA_VERSION = 1  # PRAGMA user_version
JOURNAL_FORMAT = "threshold-vote-signer-journal"
_CHUNK = 500  # tx_ids per "IN (...)" lookup
_VERIFY_CHUNK = 2048  # rows per verification task at open
_VERIFY_THREADS = 2
_KNOWN_MAX = 65_536  # rows remembered as verified (or written by us): their read-back skips the ~60 us verify
_SCHEMA = [
    ("table", "meta", "CREATE TABLE meta ("
     "id INTEGER PRIMARY KEY CHECK (id = 1), format TEXT NOT NULL, domain_tag TEXT NOT NULL, "
     "node_id TEXT NOT NULL, vote_public_key TEXT NOT NULL, created_ms INTEGER NOT NULL) STRICT"),
    ("table", "votes", "CREATE TABLE votes ("
     "tx_id TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL, timestamp_ms TEXT NOT NULL, "
     "signature BLOB NOT NULL) STRICT, WITHOUT ROWID"),
]

Step = Callable[[str], None]
Row = tuple[str, str, str, bytes]  # tx_id, value, timestamp_ms, signature, as stored


def no_step(_: str) -> None:
    """The default ``on_step`` hook: crash tests pass one that kills the process between two steps."""


def side_files(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


class Journal:
    def __init__(self, path: Path, db: sqlite3.Connection, vote_key: bytes, node_id: str, size: int,
                 known: dict[str, Row]) -> None:
        self.path = path
        self._db = db
        self.vote_key = vote_key
        self.node_id = node_id
        self.rows_at_open = size
        self._verify_key = nacl.signing.VerifyKey(vote_key)
        # tx_id -> the exact row we wrote or verified in this process (the last _KNOWN_MAX). A row
        # read back equal to it needs no new verification (same bytes, same answer); any other is verified.
        self._known = known

    # open ---------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], vote_key: bytes, node_id: str, *, create: bool = False,
             initial: Iterable[SignedVote] = (), on_step: Step = no_step) -> Journal:
        """Open (or, with ``create``, create) the journal for ``vote_key``/``node_id``; refuse anything doubtful.

        ``initial``: votes a new journal is created with, in the same atomic step (an import onto
        a new machine). They must already be verified under ``vote_key``.
        """
        path = Path(path)
        check_node_id(node_id)
        _remove_unfinished(path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not create:
                raise JournalMissing(
                    f"{path}: no signer journal. A new trustee creates one (tvote signer init); a trustee "
                    "that has signed before must import its journal's export, never start on a new one"
                ) from None
            try:
                _create(path, vote_key, node_id, list(initial), on_step)
                st = os.lstat(path)
            except (OSError, sqlite3.Error) as e:
                raise JournalUnavailable(f"{path}: cannot create the signer journal: {e}") from None
        check_private(path, st, "signer journal")
        if st.st_size == 0:
            raise JournalCorrupt(f"{path}: the signer journal is empty (truncated?); refusing to start on it")
        for side in side_files(path):
            with contextlib.suppress(FileNotFoundError):
                check_private(side, os.lstat(side), "signer journal's WAL/shm file")
        try:
            db = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True, isolation_level=None,
                                 check_same_thread=False)
        except sqlite3.Error as e:
            raise JournalCorrupt(f"{path}: cannot open the signer journal: {e}") from None
        known: dict[str, Row] = {}
        try:
            size = _check(path, db, vote_key, node_id, known)
        except BaseException:
            db.close()
            raise
        return cls(path, db, vote_key, node_id, size, known)

    # reads --------------------------------------------------------------------------------------

    def get_many(self, tx_ids: Iterable[str]) -> dict[str, SignedVote]:
        """The journaled votes for these tx_ids, each verified again as it is read back."""
        out: dict[str, SignedVote] = {}
        ids = list(dict.fromkeys(tx_ids))
        try:
            for i in range(0, len(ids), _CHUNK):
                part = ids[i:i + _CHUNK]
                marks = ",".join("?" * len(part))
                q = f"SELECT tx_id, value, timestamp_ms, signature FROM votes WHERE tx_id IN ({marks})"
                for row in self._db.execute(q, part):
                    sv = row_vote(row, self.node_id)
                    if self._known.get(sv.vote.tx_id) != row:
                        verify_row(sv, self._verify_key)
                        _remember(self._known, [row])
                    out[sv.vote.tx_id] = sv
        except sqlite3.Error as e:
            raise JournalUnavailable(f"{self.path}: reading the signer journal failed: {e}") from None
        return out

    def all_votes(self) -> Iterator[SignedVote]:
        """Every vote in tx_id order, each verified (an export must never carry a row we would refuse)."""
        verify_key = nacl.signing.VerifyKey(self.vote_key)
        previous = None
        try:
            for row in self._db.execute("SELECT tx_id, value, timestamp_ms, signature FROM votes ORDER BY tx_id"):
                sv = row_vote(row, self.node_id)
                check_order(previous, sv.vote.tx_id)
                if self._known.get(sv.vote.tx_id) != row:
                    verify_row(sv, verify_key)
                previous = sv.vote.tx_id
                yield sv
        except sqlite3.Error as e:
            raise JournalUnavailable(f"{self.path}: reading the signer journal failed: {e}") from None

    def votes_since(self, since_ms: int) -> list[SignedVote]:
        """The votes signed at or after ``since_ms`` (by their own timestamp), each verified; a full scan."""
        verify_key = nacl.signing.VerifyKey(self.vote_key)
        out = []
        try:
            for row in self._db.execute("SELECT tx_id, value, timestamp_ms, signature FROM votes "
                                        "WHERE CAST(timestamp_ms AS INTEGER) >= ? ORDER BY tx_id", (since_ms,)):
                sv = row_vote(row, self.node_id)
                if self._known.get(sv.vote.tx_id) != row:
                    verify_row(sv, verify_key)
                out.append(sv)
        except sqlite3.Error as e:
            raise JournalUnavailable(f"{self.path}: reading the signer journal failed: {e}") from None
        return out

    def count(self) -> int:
        try:
            return self._db.execute("SELECT count(*) FROM votes").fetchone()[0]
        except sqlite3.Error as e:
            raise JournalUnavailable(f"{self.path}: reading the signer journal failed: {e}") from None

    # writes -------------------------------------------------------------------------------------

    def insert_many(self, votes: list[SignedVote], on_step: Step = no_step) -> None:
        """All votes in one transaction, committed (WAL fsync'd) before this returns: one fsync per call."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            rows = [_row(sv) for sv in votes]
            self._db.executemany("INSERT INTO votes VALUES (?, ?, ?, ?)", rows)
            on_step("inserted")
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise JournalUnavailable(f"{self.path}: the signer journal commit failed: {e}") from None
        _remember(self._known, rows)

    def import_votes(self, votes: list[SignedVote], on_step: Step = no_step) -> tuple[int, int]:
        """Add verified votes atomically: (added, already present); any contradiction adds nothing."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            earlier = self.get_many(sv.vote.tx_id for sv in votes)
            clash = [(sv, earlier[sv.vote.tx_id]) for sv in votes
                     if sv.vote.tx_id in earlier and earlier[sv.vote.tx_id].vote.value != sv.vote.value]
            if clash:
                self._rollback()
                sv, e = clash[0]
                raise InterchangeConflict(
                    f"{len(clash)} of the file's entries contradict the journal, e.g. {sv.vote.tx_id}: "
                    f"the file says {sv.vote.value}, the journal holds {e.vote.value}; nothing imported"
                )
            new = [sv for sv in votes if sv.vote.tx_id not in earlier]
            rows = [_row(sv) for sv in new]
            self._db.executemany("INSERT INTO votes VALUES (?, ?, ?, ?)", rows)
            on_step("import-inserted")
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise JournalUnavailable(f"{self.path}: importing into the signer journal failed: {e}") from None
        except BaseException:
            self._rollback()
            raise
        _remember(self._known, rows)
        return len(new), len(votes) - len(new)

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


def _remember(known: dict[str, Row], rows: list[Row]) -> None:
    for row in rows:
        known.pop(row[0], None)
        known[row[0]] = row
    while len(known) > _KNOWN_MAX:
        del known[next(iter(known))]  # oldest first


def _row(sv: SignedVote) -> Row:
    v = sv.vote
    return v.tx_id, u64_text(v.value), u64_text(v.timestamp_ms), sv.signature


def _configure(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA trusted_schema = OFF")
    db.execute("PRAGMA cell_size_check = ON")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise JournalCorrupt(f"the signer journal cannot use WAL mode here (got {mode!r})")
    db.execute("PRAGMA synchronous = FULL")
    if db.execute("PRAGMA synchronous").fetchone()[0] != 2:
        raise JournalCorrupt("the signer journal refused synchronous=FULL")


def _check(path: Path, db: sqlite3.Connection, vote_key: bytes, node_id: str, known: dict[str, Row]) -> int:
    """Everything a journal must be before we sign over it; returns its number of votes."""
    try:
        if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            raise JournalCorrupt(f"{path}: an SQLite file, but not a signer journal (application_id differs)")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise JournalCorrupt(f"{path}: signer journal schema version {version}; this signer reads {SCHEMA_VERSION}")
        _configure(db)
        schema = db.execute("SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall()
        if schema != sorted(_SCHEMA, key=lambda r: r[1]):
            raise JournalCorrupt(f"{path}: the signer journal's schema was changed: {show(schema, 300)}")
        problems = [r[0] for r in db.execute("PRAGMA integrity_check(5)")]
        if problems != ["ok"]:
            raise JournalCorrupt(f"{path}: the signer journal is damaged: {'; '.join(problems)[:300]}")
        meta = db.execute("SELECT format, domain_tag, node_id, vote_public_key FROM meta").fetchall()
        if len(meta) != 1 or meta[0][:2] != (JOURNAL_FORMAT, DOMAIN_TAG.decode()):
            raise JournalCorrupt(f"{path}: the signer journal's metadata is missing or foreign: {show(meta, 200)}")
        _, _, their_node, their_key = meta[0]
        if their_key != vote_key.hex() or their_node != node_id:
            raise WrongJournal(
                f"{path} is the signer journal of node {their_node!r} with vote key {their_key}; we are node "
                f"{node_id!r} with vote key {vote_key.hex()}. Refusing: a journal copied from another trustee "
                "protects nothing (move a trustee with export/import)"
            )
        return _verify_all(db, vote_key, node_id, known)
    except sqlite3.Error as e:
        raise JournalCorrupt(f"{path}: not a readable signer journal: {e}") from None


def _verify_all(db: sqlite3.Connection, vote_key: bytes, node_id: str, known: dict[str, Row]) -> int:
    """Every row parsed, in strict tx_id order, and verified; chunks verified on a small thread pool.

    Verification is ~60 us a row on one core and libsodium releases the GIL, so two threads
    nearly halve the start-up of a large journal (measured: bench/signer_bench.py).
    """
    verify_key = nacl.signing.VerifyKey(vote_key)
    cur = db.execute("SELECT tx_id, value, timestamp_ms, signature FROM votes ORDER BY tx_id")
    previous, n = None, 0
    with ThreadPoolExecutor(max(1, min(_VERIFY_THREADS, os.cpu_count() or 1))) as pool:
        pending: list[Future[None]] = []
        while rows := cur.fetchmany(_VERIFY_CHUNK):
            votes = []
            for row in rows:
                sv = row_vote(row, node_id)
                check_order(previous, sv.vote.tx_id)
                previous = sv.vote.tx_id
                votes.append(sv)
            n += len(votes)
            _remember(known, rows)  # only kept if every chunk verifies: a failure discards the journal
            pending.append(pool.submit(_verify_chunk, votes, verify_key))
            while len(pending) > 2 * _VERIFY_THREADS:  # bounded memory: wait for the oldest chunk
                pending.pop(0).result()
        for f in pending:
            f.result()  # re-raises the first JournalCorrupt
    return n


def _verify_chunk(votes: list[SignedVote], verify_key: nacl.signing.VerifyKey) -> None:
    for sv in votes:
        verify_row(sv, verify_key)


def _create(path: Path, vote_key: bytes, node_id: str, initial: list[SignedVote], on_step: Step) -> None:
    """Build the journal under a temporary name, then link it into place: it appears whole or not at all."""
    wal, _ = side_files(path)
    if wal.exists():
        raise JournalCorrupt(
            f"{wal} exists but its journal {path.name} does not: the journal was deleted? refusing to create a "
            "new one (SQLite could replay that WAL into it)"
        )
    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    db = sqlite3.connect(tmp.resolve().as_uri() + "?mode=rw", uri=True, isolation_level=None)
    try:
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        _configure(db)
        db.execute("BEGIN IMMEDIATE")
        for _, _, sql in _SCHEMA:
            db.execute(sql)
        db.execute("INSERT INTO meta VALUES (1, ?, ?, ?, ?, ?)",
                   (JOURNAL_FORMAT, DOMAIN_TAG.decode(), node_id, vote_key.hex(), time.time_ns() // 1_000_000))
        db.executemany("INSERT INTO votes VALUES (?, ?, ?, ?)", [_row(sv) for sv in initial])
        db.execute("COMMIT")
        # Everything must be in the file itself before it is linked: a WAL left under the
        # temporary name would not follow it. (Closing checkpoints too; this one is checked.)
        busy, log, done = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy or log != done:
            raise sqlite3.OperationalError(f"checkpoint of the new journal incomplete ({busy}, {log}, {done})")
    finally:
        db.close()
    tmp_wal, _ = side_files(tmp)
    if tmp_wal.exists() and tmp_wal.stat().st_size:
        raise sqlite3.OperationalError(f"{tmp_wal} still holds data after the checkpoint")
    _fsync(tmp)
    on_step("created-temp")
    try:
        os.link(tmp, path)  # unlike rename, never replaces a journal that appeared meanwhile
    except FileExistsError:
        raise JournalCorrupt(f"{path} appeared while we were creating it: refusing") from None
    on_step("linked")
    tmp.unlink()
    _fsync(path.parent)


def _remove_unfinished(path: Path) -> None:
    """Temporary journals of a creation killed half way (only their creator, who held our lock, used them)."""
    with contextlib.suppress(OSError):
        for old in path.parent.glob(f".{glob.escape(path.name)}.creating-*"):
            old.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
