"""Physical backups with WAL archiving (pgBackRest) and a restore drill to a log position.

``tvote backup`` (``tvote.backup``) is a logical dump: it restores the log as it was when the dump
ran, nothing later. This module is the other mode: a pgBackRest *stanza* (one Postgres data
directory) in a local *repository*, Postgres pushing every finished WAL segment into it
(``archive_command = pgbackrest ... archive-push %p``), and full backups taken with
``pgbackrest backup``. A full backup plus the WAL archived after it restores the server to any
committed transaction since, not only to the backup's moment.

A point in time is given as a **log position** (``events.position``), the one clock every reader
of the log shares, and mapped to an exact recovery target, never a wall-clock time (commit times
are not unique and clocks are not the log's order):

- appends are serialized by a transaction-scoped advisory lock (``events/postgres_store.py``), so
  transactions commit in position order and the log after the commit of the transaction that
  appended position ``p`` ends exactly at its last position. ``p`` must be that last position (a
  position inside a batch cannot be reached: the batch commits whole), checked on the source;
- the target is that transaction's id (``xmin`` of the row at ``p``): ``--type=xid
  --target=<xid>``, inclusive, ``--target-action=promote``. Recovery stops right after that commit;
- a commit that happened before the backup started is not in the WAL replayed from it, so each
  backup is annotated with the log's end just before and just after it ran (pgBackRest
  ``--annotation``, stored with the backup in the repository). A position above a backup's end is
  reached from that backup by xid; a position equal to its start and end (nothing appended while it
  ran) is the backup's own consistent point (``--type=immediate``); positions appended while a
  backup ran are reached from an older backup or not at all (a clear error says which are).

The drill (:func:`restore_to_position`) restores into an empty directory, starts that copy on a
private port and socket with archiving off (so it never pushes into the source's repository),
waits for the promotion, and proves the log: its last position is the one asked for, its hash is
the source's hash at that position, ``audit verify`` passes over the whole chain, the restored
copy's projections replay to the same digest as its live ones, and that digest equals the digest
of projections rebuilt on the source from its log up to the same position.

When the source is lost (the case a restore is for), the position's transaction and that digest are
read on a first copy restored from the newest backup with *all* the archived WAL (in the same target
directory, removed again), then the copy to the position is restored and proved against it: twice the
time, and the proof is against the archive rather than the source.

Everything runs as the ``postgres`` user when we are root (pgBackRest refuses files it cannot
read, and the archived WAL must be writable by the server that pushes it).
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from devstack.postgres import SUPERUSER, pg_bin
from devstack.procs import free_port
from events.audit import verify
from events.postgres_store import PostgresStore
from projections.replay import replay, replay_digest_upto
from tvote.backup import GENESIS_HEX, BackupError, TargetNotEmpty, _safe

ANNOTATION_START = "tvote-log-start"
ANNOTATION_END = "tvote-log-end"


class StanzaError(BackupError):
    """The repository or the stanza is missing or unusable: nothing was changed."""


class PositionNotRestorable(BackupError):
    """The log position cannot be a recovery target (past the log end, inside a batch, before the backups)."""


class PastArchivedWal(PositionNotRestorable):
    """Recovery ran out of archived WAL before the position's commit: the target directory was emptied again."""


class ArchivingOff(BackupError):
    """``archive_mode`` was off: it has been set (ALTER SYSTEM) and takes effect after a server restart."""


@dataclass(frozen=True)
class Stanza:
    """A pgBackRest stanza in a local repository: every option passed on the command line (no config file)."""

    name: str
    repo: Path

    def options(self) -> list[str]:
        return [f"--stanza={self.name}", f"--repo1-path={self.repo}",
                "--log-level-file=off", "--log-level-console=off", "--log-level-stderr=error"]

    def archive_command(self, data_dir: Path, pgbackrest: str | None = None) -> str:
        """``pgbackrest``: the executable on the server's host (default: the one on this machine's PATH)."""
        argv = [pgbackrest or _pgbackrest(), *self.options(), f"--pg1-path={data_dir}", "archive-push"]
        return " ".join(shlex.quote(a) for a in argv) + " %p"


def archive_settings(stanza: Stanza, data_dir: Path, archive_timeout: str = "0",
                     pgbackrest: str | None = None) -> dict[str, str]:
    """The server settings that archive into ``stanza``: for ``devstack.postgres.Postgres(settings=...)`` or
    a Patroni member's ``postgresql.parameters``. ``archive_timeout``: force a segment switch after that
    long with writes (``"60s"``) so that the archive lags the log by at most that much; ``"0"``: only full
    segments and explicit switches are archived. ``pgbackrest``: the executable where the server runs (a
    container's, for deploy/patroni); default the one on this machine's PATH."""
    return {"wal_level": "replica", "archive_mode": "on",
            "archive_command": stanza.archive_command(data_dir, pgbackrest),
            "archive_timeout": archive_timeout}


@dataclass
class BackupReport:
    stanza: str
    repo: str
    label: str
    seconds: float
    log_start: int  # the log's end just before the backup started
    log_end: int  # and just after it finished
    database_size: int  # bytes of the data directory backed up
    repo_size: int  # bytes the backup takes in the repository (compressed)
    wal_start: str
    wal_stop: str
    archive_min: str
    archive_max: str
    archiving_configured: bool = False  # True when this run set archive_command (ALTER SYSTEM + reload)


@dataclass
class RestoreReport:
    stanza: str
    target_dir: str
    position: int
    backup_label: str
    target_type: str  # "xid" or "immediate"
    target: str
    seconds_probe: float = 0.0  # without the source: the first restore to the archive's end, read, removed
    seconds_restore: float = 0.0  # pgbackrest restore (files)
    seconds_recovery: float = 0.0  # start, WAL replay up to the target, promotion
    restored_bytes: int = 0
    log_position: int = 0
    last_event_hash: str = GENESIS_HEX
    source_hash: str = GENESIS_HEX
    audit_ok: bool = False
    audit_events: int = 0
    live_digest: str = ""
    replay_digest: str = ""
    source_digest: str = ""
    port: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------------------------- helpers


def _pgbackrest() -> str:
    found = shutil.which("pgbackrest")
    if not found:
        raise BackupError("pgbackrest not found: install Debian's pgbackrest (apt-get install pgbackrest)")
    return found


def _as_pg(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SUPERUSER, "--", *argv] if os.geteuid() == 0 else argv


def _give_to_pg(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam(SUPERUSER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _tool(argv: list[str], what: str, error: type[BackupError] = BackupError) -> str:
    proc = subprocess.run(_as_pg(argv), capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [x for x in (proc.stderr or proc.stdout).strip().splitlines() if x.strip()]
        raise error(f"{what} failed (exit {proc.returncode}): {' / '.join(lines[-3:])[:400]}")
    return proc.stdout


def _brest(stanza: Stanza, command: str, *extra: str, what: str = "", error: type[BackupError] = BackupError) -> str:
    return _tool([_pgbackrest(), *stanza.options(), *extra, command], what or f"pgbackrest {command}", error)


def _log_end(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]


def _connect(dsn: str) -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, connect_timeout=10, autocommit=True)
    except psycopg.OperationalError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BackupError(f"cannot connect to {_safe(dsn)}: {first}") from e


def stanza_info(stanza: Stanza) -> dict:
    """``pgbackrest info`` for the stanza, refusing a missing repository, stanza or backup (:class:`StanzaError`)."""
    if not stanza.repo.is_dir():
        raise StanzaError(f"repository {stanza.repo} does not exist: give the --repo of an earlier "
                          "`tvote backup --pgbackrest`")
    out = _brest(stanza, "info", "--output=json", error=StanzaError)
    try:
        info = next(s for s in json.loads(out) if s.get("name") == stanza.name)
    except (ValueError, StopIteration) as e:
        raise StanzaError(f"pgbackrest info gave no stanza {stanza.name} in {stanza.repo}") from e
    status = info.get("status", {})
    if status.get("code", 0) != 0 or not info.get("backup"):
        raise StanzaError(f"stanza {stanza.name} in repository {stanza.repo}: {status.get('message', 'no backup')} "
                          "(wrong --stanza or --repo, or no `tvote backup --pgbackrest` yet)")
    return info


def _server_facts(conn: psycopg.Connection) -> tuple[Path, str]:
    data_dir = Path(conn.execute("SHOW data_directory").fetchone()[0])
    sockets = conn.execute("SHOW unix_socket_directories").fetchone()[0]
    socket = next((s.strip() for s in sockets.split(",") if s.strip().startswith("/")), "")
    if not socket:
        raise BackupError("the server listens on no Unix socket (unix_socket_directories is empty): pgBackRest "
                          "needs one")
    return data_dir, socket


# ---------------------------------------------------------------------------------------------- backup


def _ensure_archiving(conn: psycopg.Connection, stanza: Stanza, data_dir: Path) -> bool:
    """Point ``archive_command`` at the stanza; returns True if it had to be set. ``archive_mode`` needs a
    restart: when off, it is set for the next start and :class:`ArchivingOff` is raised."""
    want = stanza.archive_command(data_dir)
    mode = conn.execute("SHOW archive_mode").fetchone()[0]
    command = conn.execute("SHOW archive_command").fetchone()[0]
    if mode == "off":
        conn.execute("ALTER SYSTEM SET archive_mode = 'on'")
        conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(want)))
        raise ArchivingOff(f"archive_mode was off on the server of {data_dir}: archive_mode and archive_command are "
                           "now set (ALTER SYSTEM); restart that server, then run this again")
    if command == want:
        return False
    conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(want)))
    conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while conn.execute("SHOW archive_command").fetchone()[0] != want:
        if time.monotonic() > deadline:
            raise BackupError("archive_command did not change after ALTER SYSTEM and a reload: it is set on the "
                              f"server's command line (or by Patroni): set it there to {want!r}")
        time.sleep(0.2)
    return True


def backup(dsn: str, stanza: Stanza, retention_full: int = 2) -> BackupReport:
    """Create the stanza if needed, make sure WAL archiving goes into it, take a full backup.

    ``dsn``: a superuser on the server to back up (this machine: pgBackRest reads its data directory
    and talks to it over its Unix socket). The backup is annotated with the log's end before and
    after it, which :func:`restore_to_position` uses to choose the backup for a position.
    ``retention_full``: full backups kept (older ones expire with the WAL only they needed).
    """
    with _connect(dsn) as conn:
        if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
            raise BackupError(f"{_safe(dsn)} is not a superuser: pgBackRest's backup needs one (the postgres role)")
        if not conn.execute("SELECT to_regclass('public.events')").fetchone()[0]:
            raise BackupError(f"{_safe(dsn)} has no events table: not a tvote database (run tvote migrate?)")
        data_dir, socket = _server_facts(conn)
        port = conn.execute("SHOW port").fetchone()[0]
        pg = [f"--pg1-path={data_dir}", f"--pg1-port={port}", f"--pg1-socket-path={socket}"]
        if not stanza.repo.exists():
            stanza.repo.mkdir(parents=True)
            _give_to_pg(stanza.repo)
        configured = _ensure_archiving(conn, stanza, data_dir)
        _brest(stanza, "stanza-create", *pg, what=f"pgbackrest stanza-create {stanza.name}")
        _brest(stanza, "check", *pg, "--archive-timeout=30", what="pgbackrest check (is WAL archiving working?)")
        log_start = _log_end(conn)
        t0 = time.perf_counter()
        _brest(stanza, "backup", *pg, "--type=full", "--start-fast", f"--repo1-retention-full={retention_full}",
               "--archive-timeout=60", f"--annotation={ANNOTATION_START}={log_start}", what="pgbackrest backup")
        seconds = time.perf_counter() - t0
        log_end = _log_end(conn)
    label = stanza_info(stanza)["backup"][-1]["label"]
    # The end position is known only now: annotate the backup with it (annotations can be added later).
    _brest(stanza, "annotate", f"--set={label}", f"--annotation={ANNOTATION_END}={log_end}")
    info = stanza_info(stanza)
    b = next(x for x in info["backup"] if x["label"] == label)
    archive = info.get("archive") or [{}]
    return BackupReport(stanza.name, str(stanza.repo), label, seconds, log_start, log_end, b["info"]["size"],
                        b["info"]["repository"]["size"], b["archive"]["start"], b["archive"]["stop"],
                        archive[-1].get("min", ""), archive[-1].get("max", ""), configured)


# ---------------------------------------------------------------------------------------------- restore


@dataclass(frozen=True)
class Facts:
    """What the log says about a position: read on the source, or on a copy restored to the archive's end."""

    log_end: int
    xid: str
    first: int  # the first and last positions the same transaction appended
    last: int
    hash: str


@dataclass(frozen=True)
class Target:
    backup_label: str
    type: str  # "xid" | "immediate"
    value: str  # the xid, or "" for immediate


def read_facts(dsn: str, position: int, where: str = "the log") -> Facts:
    """Position ``position``'s transaction on ``dsn``; refuses a position past the end or inside a batch."""
    if position < 1:
        raise PositionNotRestorable(f"position {position}: log positions start at 1")
    with _connect(dsn) as conn:
        end = _log_end(conn)
        if position > end:
            raise PositionNotRestorable(f"position {position} is past {where}'s end ({end})")
        xid, row_hash = conn.execute("SELECT xmin::text, hash FROM events WHERE position = %s", (position,)).fetchone()
        first, last = conn.execute("SELECT min(position), max(position) FROM events WHERE xmin = %s::xid",
                                   (xid,)).fetchone()
    if last != position:
        raise PositionNotRestorable(f"position {position} is inside a transaction that appended {first}..{last}: "
                                    f"a batch commits whole; choose {first - 1} or {last}")
    return Facts(end, xid, first, last, bytes(row_hash).hex())


def plan(info: dict, stanza: Stanza, position: int, facts: Facts) -> Target:
    """The backup and the exact recovery target for ``position`` (see the module's docstring)."""
    for b in reversed(info["backup"]):  # newest first
        notes = b.get("annotation") or {}
        if ANNOTATION_START not in notes or ANNOTATION_END not in notes:
            continue  # not taken by tvote (or unfinished): its log positions are unknown
        start, stop = int(notes[ANNOTATION_START]), int(notes[ANNOTATION_END])
        if position > stop:
            return Target(b["label"], "xid", facts.xid)
        if position == start == stop:
            return Target(b["label"], "immediate", "")
    spans = ", ".join(f"{b['label']}: {(b.get('annotation') or {}).get(ANNOTATION_START, '?')}.."
                      f"{(b.get('annotation') or {}).get(ANNOTATION_END, '?')}" for b in info["backup"])
    raise PositionNotRestorable(f"position {position} is not after any backup's end (backups and the log's end "
                                f"while each ran: {spans}): no backup in {stanza.repo} reaches it")


def switch_wal(source_dsn: str, stanza: Stanza, timeout: float = 30) -> str:
    """Close the current WAL segment on the source and wait until it is in the repository; returns its name.

    What the drill does to restore up to the log's current end: a segment is archived only when it
    is full, switched, or ``archive_timeout`` passes. (The repository is asked, not
    ``pg_stat_archiver``, whose figures may lag.)
    """
    with _connect(source_dsn) as conn:
        name = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    deadline = time.monotonic() + timeout
    while True:
        archive = stanza_info(stanza).get("archive") or [{}]
        if max((a.get("max") or "") for a in archive)[-16:] >= name[-16:]:
            return name
        if time.monotonic() > deadline:
            raise BackupError(f"WAL segment {name} was not archived within {timeout:.0f}s: check archive_command "
                              "(pg_stat_archiver.last_failed_wal) and the repository")
        time.sleep(0.3)


def _check_target_dir(target_dir: Path) -> None:
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise TargetNotEmpty(f"restore target {target_dir} is not empty: restore into a new or empty directory")


def _start(data_dir: Path, port: int) -> None:
    log = data_dir / "tvote-restore.log"
    opts = (f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data_dir} "
            "-c archive_mode=off -c hot_standby=off -c synchronous_standby_names='' -c primary_conninfo=''")
    # hot_standby off: nobody reads the copy before it is promoted, and a standby would also demand the
    # source's max_connections and friends (set on its command line, not in the restored files).
    # No synchronous standby and no upstream: a Patroni member's copy inherits both, and its commits
    # would wait forever for a standby that is not there.
    subprocess.run(_as_pg([pg_bin("pg_ctl"), "-D", str(data_dir), "-l", str(log), "-o", opts, "-W", "start"]),
                   capture_output=True)


def stop(data_dir: Path) -> None:
    """Stop a restored copy (fast)."""
    if (Path(data_dir) / "postmaster.pid").exists():
        subprocess.run(_as_pg([pg_bin("pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"]),
                       capture_output=True)


def _wait_promoted(data_dir: Path, dsn: str, timeout: float) -> None:
    """Until the copy accepts writes; raise :class:`PastArchivedWal` if recovery ran out of WAL first."""
    log = data_dir / "tvote-restore.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "recovery ended before configured recovery target was reached" in text:
            raise PastArchivedWal("the archived WAL ends before that position's commit: archive it first "
                                  "(--switch-wal on the source, or wait for archive_timeout)")
        if "FATAL" in text and not (data_dir / "postmaster.pid").exists():
            fatal = next(x for x in text.splitlines() if "FATAL" in x)
            raise BackupError(f"the restored server did not start: {fatal.strip()[:300]}")
        try:
            with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as c:
                if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    return
        except psycopg.OperationalError:
            pass
        time.sleep(0.3)
    raise BackupError(f"the restored server was not promoted within {timeout:.0f}s (see {log})")


def _restore_and_start(stanza: Stanza, target_dir: Path, label: str, kind: list[str], port: int, dbname: str,
                       timeout: float, created: bool) -> tuple[str, float, float]:
    """pgbackrest restore into the (empty) target, start the copy, wait for its promotion; returns its DSN and
    the seconds of both steps. On any failure the copy is stopped and the directory left as it was given."""
    target_dir.mkdir(parents=True, exist_ok=True)
    target_dir.chmod(0o700)
    _give_to_pg(target_dir)
    try:
        t0 = time.perf_counter()
        _brest(stanza, "restore", f"--pg1-path={target_dir}", f"--set={label}", "--archive-mode=off", *kind,
               what=f"pgbackrest restore into {target_dir}")
        files = time.perf_counter() - t0
        dsn = f"host={target_dir} port={port} dbname={dbname} user={SUPERUSER}"
        t1 = time.perf_counter()
        _start(target_dir, port)
        _wait_promoted(target_dir, dsn, timeout)
        return dsn, files, time.perf_counter() - t1
    except BaseException:
        _discard(target_dir, created)
        raise


def _discard(target_dir: Path, created: bool) -> None:
    """Stop a copy and remove what the restore wrote: the directory as it was given (or gone, if we made it)."""
    stop(target_dir)
    if created:
        shutil.rmtree(target_dir, ignore_errors=True)
    elif target_dir.exists():
        for child in target_dir.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _probe(stanza: Stanza, info: dict, position: int, target_dir: Path, port: int, dbname: str, timeout: float,
           created: bool) -> tuple[Facts, str, float]:
    """Without the source: restore the newest backup with all archived WAL into the target, read the position's
    facts and its digest there, and empty the target again. Returns facts, digest and the seconds it took."""
    t0 = time.perf_counter()
    dsn, _, _ = _restore_and_start(stanza, target_dir, info["backup"][-1]["label"], [], port, dbname, timeout,
                                   created)
    try:
        facts = read_facts(dsn, position, where="the archived log")
        return facts, replay_digest_upto(dsn, position), time.perf_counter() - t0
    finally:
        _discard(target_dir, created)


def restore_to_position(source_dsn: str | None, stanza: Stanza, position: int, target_dir: Path, *,
                        port: int | None = None, keep_running: bool = False, timeout: float = 120,
                        dbname: str | None = None) -> RestoreReport:
    """Restore the stanza into the empty ``target_dir`` up to log ``position``, start it, prove the log.

    ``source_dsn``: the backed-up database (superuser), to map the position to its transaction and to
    compute the digest the copy must reproduce. ``None`` when the source is lost: the newest backup is
    first restored with all archived WAL into the same directory (a probe, removed again) and read
    instead (``dbname`` then names the database, default ``tvote``); this doubles the time. Refused
    before anything is written: a non-empty target (:class:`TargetNotEmpty`), a missing repository or
    stanza (:class:`StanzaError`), a position past the log's end, inside a batch or before every backup
    (:class:`PositionNotRestorable`; without the source the first two are found by the probe, which is
    then removed). Recovery that runs out of archived WAL raises :class:`PastArchivedWal` and empties the
    target again. Proof failures are listed in ``report.problems`` (the copy stays for inspection).
    """
    target_dir = Path(target_dir).absolute()
    _check_target_dir(target_dir)
    info = stanza_info(stanza)
    created = not target_dir.exists()
    given = None if created else target_dir.stat()  # an empty directory given: its owner and mode come back
    try:
        port = port or free_port()
        if source_dsn is not None:
            dbname = str(conninfo.conninfo_to_dict(source_dsn).get("dbname") or "postgres")
            facts, source_digest, probe_seconds = read_facts(source_dsn, position), "", 0.0
        else:
            dbname = dbname or "tvote"
            facts, source_digest, probe_seconds = _probe(stanza, info, position, target_dir, port, dbname, timeout,
                                                         created)
        target = plan(info, stanza, position, facts)
        report = RestoreReport(stanza.name, str(target_dir), position, target.backup_label, target.type, target.value,
                               source_hash=facts.hash, source_digest=source_digest, seconds_probe=probe_seconds,
                               port=port)
        kind = ["--type=xid", f"--target={target.value}", "--target-action=promote"] if target.type == "xid" else [
            "--type=immediate", "--target-action=promote"]
        dsn, report.seconds_restore, report.seconds_recovery = _restore_and_start(
            stanza, target_dir, target.backup_label, kind, port, dbname, timeout, created)
    except BaseException:
        if given is not None and target_dir.exists():
            os.chown(target_dir, given.st_uid, given.st_gid)
            target_dir.chmod(given.st_mode & 0o7777)
        raise
    report.restored_bytes = sum(f.stat().st_size for f in target_dir.rglob("*") if f.is_file())
    try:
        _prove(source_dsn, dsn, position, report)
    finally:
        if not keep_running:
            stop(target_dir)
    return report


def _prove(source_dsn: str | None, dsn: str, position: int, report: RestoreReport) -> None:
    """Chain end, audit verify, replay digest on the copy; the source's digest of its log up to ``position``."""
    with psycopg.connect(dsn) as c:
        report.log_position = _log_end(c)
        row = c.execute("SELECT hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
        report.last_event_hash = bytes(row[0]).hex() if row else GENESIS_HEX
    if report.log_position != position:
        report.problems.append(f"the restored log ends at {report.log_position}, not {position}")
    if report.last_event_hash != report.source_hash:
        report.problems.append(f"restored hash at the end {report.last_event_hash[:16]} != the source's hash at "
                               f"{position} {report.source_hash[:16]}")
    store = PostgresStore(dsn)
    try:
        audit = verify(store)
    finally:
        store.close()
    report.audit_ok, report.audit_events = audit.ok, audit.events
    if not audit.ok:
        report.problems.append(f"audit verify fails at position {audit.first_problem.position}: "
                               f"{audit.first_problem.problem}")
    rep = replay(dsn)
    report.live_digest, report.replay_digest = rep.live_digest, rep.replay_digest
    if not rep.equal:
        report.problems.append(f"replay differs from the restored projections in {', '.join(rep.differing_tables)}")
    if source_dsn is not None:
        report.source_digest = replay_digest_upto(source_dsn, position)
    if report.replay_digest != report.source_digest:
        report.problems.append("the restored copy's replay digest differs from the source's (or the archived) "
                               f"log up to position {position}")
