"""Backup and restore: a Postgres dump and an etcd snapshot, with a manifest that proves the restore.

Postgres is the truth (the hash-chained log and the projections built from it); etcd only holds
guards (stream heads, vote claims, counters) that the nodes repair from Postgres. A backup is a
directory of three files:

- ``postgres.dump``: ``pg_dump -Fc`` of the database, taken inside one exported snapshot, so the
  log position, last hash and projection digest in the manifest describe exactly what was dumped
  even while nodes keep appending;
- ``etcd.snapshot.db``: ``etcdctl snapshot save`` from one member, taken *before* the Postgres
  snapshot, so restored etcd heads are never ahead of the restored log (heads behind the log are
  repaired forward on the first conflict, see ``recording/etcd_guard.py``);
- ``manifest.json``: written last (a directory without it is an unfinished backup), with the
  time, the log position and hash, the projection digest, the roles the grants name, and the
  size and BLAKE3 of every file, so a restore can refuse a damaged backup before touching anything.

A restore verifies the files, refuses a target database that holds any table, restores the dump in
one transaction, restores etcd into a fresh data directory, and then proves the result: the last
position and hash equal the manifest's, ``audit verify`` passes over the whole chain, the restored
projections have the manifest's digest, and a replay from the log rebuilds them to the same digest.

Restoring a three-member etcd cluster: restore the *same* snapshot file once per member with
:func:`restore_etcd_member`, each with its own ``name`` and ``peer_url``, all with the same
``initial_cluster`` (``"etcd0=http://h0:2380,etcd1=http://h1:2380,etcd2=http://h2:2380"``) and
the same new ``cluster_token``; then start all three members on their restored data directories
(their ``--initial-cluster*`` flags are ignored once a data directory exists). Never restore a
single member into a running cluster: replace a lost member with ``etcdctl member remove/add``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import blake3
import psycopg
from psycopg import conninfo, sql

from devstack.postgres import pg_bin
from events.audit import verify
from events.postgres_store import PostgresStore
from projections.digest import digest
from projections.projector import DEFAULT_NAME
from projections.replay import replay
from tvote.db import APP_ROLE

FORMAT = 1
MANIFEST = "manifest.json"
PG_FILE = "postgres.dump"
ETCD_FILE = "etcd.snapshot.db"
GENESIS_HEX = "00" * 32


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says what to do."""


class CorruptBackup(BackupError):
    """A file is missing or its size or BLAKE3 differs from the manifest: nothing was restored."""


class TargetNotEmpty(BackupError):
    """The target database already holds tables (or the etcd data directory exists): refused."""


class RestoreCheckFailed(BackupError):
    """The data was restored but does not match the manifest; ``report`` says where."""

    def __init__(self, report: RestoreReport) -> None:
        super().__init__("restore does not match the backup: " + "; ".join(report.problems))
        self.report = report


@dataclass
class FileEntry:
    name: str
    size: int
    blake3: str


@dataclass
class BackupManifest:
    """What a backup holds and what a restore of it must reproduce."""

    format: int
    created_at: str  # UTC, ISO 8601
    database: str  # name of the source database
    server_version: str
    alembic_revision: str | None
    log_position: int  # last event position in the dump (0: empty log)
    last_event_hash: str  # hex; the genesis hash when the log is empty
    events: int
    projected_position: int  # where the projector stood in the dump
    projection_digest: str  # digest of the projection tables as dumped
    grantee_roles: list[str]  # roles the dumped grants name: they must exist where it is restored
    etcd_endpoint: str | None
    etcd_revision: int | None
    etcd_total_keys: int | None
    files: list[FileEntry] = field(default_factory=list)

    @property
    def projection_complete(self) -> bool:
        """True when the dumped projections cover the whole log, so a replay must give their digest."""
        return self.projected_position == self.log_position

    def file(self, name: str) -> FileEntry | None:
        return next((f for f in self.files if f.name == name), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, backup_dir: Path) -> BackupManifest:
        path = Path(backup_dir) / MANIFEST
        if not path.is_file():
            raise CorruptBackup(f"{path} not found: not a backup directory, or the backup never finished")
        try:
            raw = json.loads(path.read_text())
            raw["files"] = [FileEntry(**f) for f in raw["files"]]
            manifest = cls(**raw)
        except (ValueError, TypeError, KeyError) as e:
            raise CorruptBackup(f"{path} is unreadable ({e}): the backup is damaged") from e
        if manifest.format != FORMAT:
            raise CorruptBackup(f"{path}: backup format {manifest.format}, this tvote reads format {FORMAT}")
        return manifest


@dataclass
class RestoreReport:
    """What a restore did and what it checked; ``ok`` when everything matched the manifest."""

    backup_dir: str
    database: str
    seconds: float = 0.0
    log_position: int = 0
    last_event_hash: str = GENESIS_HEX
    audit_events: int = 0
    audit_ok: bool = False
    restored_digest: str = ""  # the projection tables as restored, before any replay
    live_digest: str = ""  # the restored projections after replay caught them up to the log's end
    replay_digest: str = ""  # projections rebuilt from the log alone
    created_roles: list[str] = field(default_factory=list)
    etcd_data_dir: str | None = None
    etcd_revision: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------------------------- helpers


def file_blake3(path: Path) -> str:
    h = blake3.blake3()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _entry(path: Path) -> FileEntry:
    return FileEntry(path.name, path.stat().st_size, file_blake3(path))


def _etcdctl() -> str:
    found = shutil.which("etcdctl")
    if not found:
        raise BackupError("etcdctl not found: install Debian's etcd-client (apt-get install etcd-client)")
    return found


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run a tool; on failure raise with the tool's own last lines, which usually say why."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise BackupError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def _etcd_env() -> dict[str, str]:
    return {**os.environ, "ETCDCTL_API": "3"}


def _safe(dsn: str) -> str:
    """The DSN without its password, for messages and reports."""
    params = conninfo.conninfo_to_dict(dsn)
    params.pop("password", None)
    return conninfo.make_conninfo(**params)


def _dbname(dsn: str) -> str:
    return str(conninfo.conninfo_to_dict(dsn).get("dbname", ""))


def _maintenance_dsn(dsn: str) -> str:
    return conninfo.make_conninfo(dsn, dbname="postgres")


def snapshot_status(path: Path) -> dict:
    """``etcdctl snapshot status``: revision, total keys and hash of a snapshot or a member's db file."""
    return json.loads(_run([_etcdctl(), "snapshot", "status", "-w", "json", str(path)], "etcdctl snapshot status",
                           _etcd_env()))


# Roles named in the grants of the public schema and the objects in it (owners excluded: restored
# with --no-owner, the objects belong to whoever restores them).
_GRANTEES = """
SELECT DISTINCT pg_get_userbyid(a.grantee) FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'public'::regnamespace AND a.grantee <> 0 AND a.grantee <> c.relowner
UNION
SELECT DISTINCT pg_get_userbyid(a.grantee) FROM pg_proc p, aclexplode(p.proacl) a
 WHERE p.pronamespace = 'public'::regnamespace AND a.grantee <> 0 AND a.grantee <> p.proowner
UNION
SELECT DISTINCT pg_get_userbyid(a.grantee) FROM pg_namespace n, aclexplode(n.nspacl) a
 WHERE n.nspname = 'public' AND a.grantee <> 0 AND a.grantee <> n.nspowner
ORDER BY 1
"""

_USER_RELATIONS = """
SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
   AND n.nspname NOT LIKE 'pg\\_temp%' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
 ORDER BY 1 LIMIT 5
"""


# ---------------------------------------------------------------------------------------------- backup


def backup(owner_dsn: str, etcd_endpoint: str | None, out_dir: Path) -> BackupManifest:
    """Dump the database and snapshot etcd into ``out_dir``, and write the manifest that proves them.

    ``owner_dsn`` must be a role that can read every table (the owner or a superuser); the
    service role ``tvote_app`` cannot. ``etcd_endpoint``: one client URL or several separated by commas
    (``http://127.0.0.1:2379,...``): the snapshot streams from the first member that answers; ``None`` skips
    etcd (its contents are rebuildable from Postgres). ``out_dir`` may exist but must not hold a
    backup already. Safe while nodes and projectors run: the dump and the manifest's figures come
    from one Postgres snapshot. Raises :class:`BackupError` with the reason.
    """
    out = Path(out_dir)
    if (out / MANIFEST).exists():
        raise BackupError(f"{out} already holds a backup: choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    pg_path, etcd_path = out / PG_FILE, out / ETCD_FILE
    for p in (pg_path, etcd_path):
        p.unlink(missing_ok=True)  # leftovers of an unfinished backup

    etcd_status: dict = {}
    if etcd_endpoint:  # etcd first: restored heads may lag the restored log, never lead it
        # The same comma-separated list every other command takes: a snapshot streams from one member,
        # the first one that answers.
        tried = []
        for url in [u.strip() for u in etcd_endpoint.split(",") if u.strip()]:
            endpoint = url if "://" in url else f"http://{url}"
            try:  # a quick health probe first: a snapshot of a dead member waits out its command timeout
                _run([_etcdctl(), "--endpoints", endpoint, "--dial-timeout", "2s", "--command-timeout", "3s",
                      "endpoint", "health"], f"etcd health of {endpoint}", _etcd_env())
                _run([_etcdctl(), "--endpoints", endpoint, "--dial-timeout", "5s", "--command-timeout", "120s",
                      "snapshot", "save", str(etcd_path)], f"etcd snapshot of {endpoint}", _etcd_env())
                etcd_endpoint = endpoint
                break
            except BackupError as e:
                tried.append(str(e))
                etcd_path.unlink(missing_ok=True)
        else:
            raise BackupError("no etcd member gave a snapshot: " + "; ".join(tried)[:500])
        etcd_status = snapshot_status(etcd_path)

    try:
        conn = psycopg.connect(owner_dsn, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise BackupError(f"cannot connect to {_safe(owner_dsn)}: {e}") from e
    with conn:
        if not conn.execute("SELECT pg_has_role(current_user, 'pg_read_all_data', 'USAGE') OR current_user = "
                            "(SELECT tableowner FROM pg_tables WHERE tablename = 'events' LIMIT 1)").fetchone()[0]:
            raise BackupError(f"{_safe(owner_dsn)} connects as a role that cannot read every table (the service "
                              "role tvote_app?): back up with the owner's DSN")
        conn.commit()  # the snapshot below needs a transaction of its own
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        if not conn.execute("SELECT to_regclass('public.events')").fetchone()[0]:
            raise BackupError(f"{_safe(owner_dsn)} has no events table: not a tvote database (run tvote migrate?)")
        position, count = conn.execute("SELECT coalesce(max(position), 0), count(*) FROM events").fetchone()
        row = conn.execute("SELECT hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
        last_hash = bytes(row[0]).hex() if row else GENESIS_HEX
        tracked = conn.execute("SELECT position FROM projector_tracking WHERE name = %s", (DEFAULT_NAME,)).fetchone()
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone() if conn.execute(
            "SELECT to_regclass('public.alembic_version')").fetchone()[0] else None
        manifest = BackupManifest(
            format=FORMAT,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            database=_dbname(owner_dsn),
            server_version=conn.execute("SHOW server_version").fetchone()[0],
            alembic_revision=revision[0] if revision else None,
            log_position=position,
            last_event_hash=last_hash,
            events=count,
            projected_position=tracked[0] if tracked else 0,
            projection_digest=digest(conn),
            grantee_roles=[r[0] for r in conn.execute(_GRANTEES)],
            etcd_endpoint=etcd_endpoint,
            etcd_revision=etcd_status.get("revision"),
            etcd_total_keys=etcd_status.get("totalKey"),
        )
        # The dump sees exactly what this transaction sees, so the figures above describe it.
        _run([pg_bin("pg_dump"), "--format=custom", f"--snapshot={snapshot_id}", f"--file={pg_path}",
              f"--dbname={owner_dsn}"], f"pg_dump of {_safe(owner_dsn)}")
    manifest.files = [_entry(pg_path)] + ([_entry(etcd_path)] if etcd_endpoint else [])
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(out / MANIFEST)  # the manifest's presence marks a finished backup
    return manifest


# ---------------------------------------------------------------------------------------------- restore


def verify_files(backup_dir: Path) -> BackupManifest:
    """Load the manifest and check every file's size and BLAKE3; raise :class:`CorruptBackup` if any differs."""
    manifest = BackupManifest.load(backup_dir)
    if manifest.file(PG_FILE) is None:
        raise CorruptBackup(f"{backup_dir}/{MANIFEST} lists no {PG_FILE}: the backup is damaged")
    for entry in manifest.files:
        path = Path(backup_dir) / entry.name
        if not path.is_file():
            raise CorruptBackup(f"{path} is missing: the backup is incomplete, nothing was restored")
        size = path.stat().st_size
        if size != entry.size:
            raise CorruptBackup(f"{path} has {size} bytes, the manifest says {entry.size}: the backup is damaged, "
                                "nothing was restored")
        if file_blake3(path) != entry.blake3:
            raise CorruptBackup(f"{path} does not match its BLAKE3 in the manifest: the backup is damaged, "
                                "nothing was restored")
    return manifest


def restore_etcd_member(snapshot: Path, data_dir: Path, name: str, peer_url: str, initial_cluster: str | None = None,
                        cluster_token: str = "tvote-restored") -> int:
    """Restore an etcd snapshot into a fresh data directory for one member; returns its revision.

    For a single member ``initial_cluster`` defaults to ``name=peer_url``; for a three-member
    cluster call it once per member with the full ``initial_cluster`` and one shared token.
    ``data_dir`` must not exist yet (etcdctl refuses to overwrite one).
    """
    data_dir = Path(data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise TargetNotEmpty(f"etcd data directory {data_dir} is not empty: restore into a new directory")
    if data_dir.exists():
        data_dir.rmdir()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        _run([_etcdctl(), "snapshot", "restore", str(snapshot), "--data-dir", str(data_dir), "--name", name,
              "--initial-cluster", initial_cluster or f"{name}={peer_url}", "--initial-advertise-peer-urls", peer_url,
              "--initial-cluster-token", cluster_token], f"etcd snapshot restore into {data_dir}", _etcd_env())
    except BackupError:
        shutil.rmtree(data_dir, ignore_errors=True)  # no half-restored member
        raise
    return int(snapshot_status(data_dir / "member" / "snap" / "db")["revision"])


def _open_target(dsn: str, create: bool) -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, connect_timeout=10, autocommit=True)
    except psycopg.OperationalError as e:
        if not create or "does not exist" not in str(e):
            hint = " (pass create_database=True / --create to create it)" if "does not exist" in str(e) else ""
            raise BackupError(f"cannot connect to {_safe(dsn)}: {e}{hint}") from e
    name = _dbname(dsn)
    with psycopg.connect(_maintenance_dsn(dsn), autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
            sql.Identifier(name)))
    return psycopg.connect(dsn, connect_timeout=10, autocommit=True)


def _prepare_target(conn: psycopg.Connection, manifest: BackupManifest) -> list[str]:
    """Refuse a non-empty database; create the app role if the grants need it. Returns roles created."""
    found = [r[0] for r in conn.execute(_USER_RELATIONS)]
    if found:
        raise TargetNotEmpty(f"database {conn.info.dbname} is not empty (holds {', '.join(found)}, ...): restore "
                             "into a new, empty database")
    roles = set(manifest.grantee_roles) | {APP_ROLE}
    existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (sorted(roles),))}
    missing = sorted(roles - existing)
    unknown = [r for r in missing if r != APP_ROLE]
    if unknown:
        raise BackupError(f"role(s) {', '.join(unknown)} named in the backup's grants do not exist in the target "
                          "cluster: create them first")
    if APP_ROLE in missing:  # as migration 0001 does; roles are cluster-wide, so it is not in the dump
        try:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(APP_ROLE)))
        except psycopg.Error as e:
            raise BackupError(f"role {APP_ROLE} is missing and could not be created ({e}): create it first, or "
                              "restore as a role with CREATEROLE") from e
    return missing


def restore(backup_dir: Path, owner_dsn_of_empty_db: str, etcd_data_dir: Path | None = None, *,
            etcd_name: str = "etcd0", etcd_peer_url: str = "http://127.0.0.1:2380",
            etcd_cluster_token: str = "tvote-restored", create_database: bool = False,
            check: bool = True) -> RestoreReport:
    """Restore a backup into an empty database (and a fresh etcd data directory), then prove it.

    Order: verify every file against the manifest (:class:`CorruptBackup`, nothing touched);
    refuse a database that holds any table or an etcd directory that exists with files
    (:class:`TargetNotEmpty`); create the role ``tvote_app`` if missing (the dump's grants need
    it); ``pg_restore --no-owner`` in one transaction (all or nothing); ``etcdctl snapshot
    restore`` into ``etcd_data_dir`` for a single member named ``etcd_name`` at
    ``etcd_peer_url`` (start etcd on that directory afterwards with the same name and peer URL;
    ``None`` skips etcd: the nodes rebuild its guards from Postgres). Then, with ``check``: the
    last position and hash equal the manifest's, ``audit verify`` passes, the restored projections
    have the manifest's digest, and a replay (needs this owner role) rebuilds the same digest;
    any mismatch raises :class:`RestoreCheckFailed` carrying the report (the data stays restored:
    drop that database before trying again).
    """
    t0 = time.perf_counter()
    backup_dir = Path(backup_dir)
    manifest = verify_files(backup_dir)
    if etcd_data_dir is not None:
        if manifest.file(ETCD_FILE) is None:
            raise BackupError(f"{backup_dir} holds no etcd snapshot: restore without an etcd data directory")
        if Path(etcd_data_dir).exists() and any(Path(etcd_data_dir).iterdir()):
            raise TargetNotEmpty(f"etcd data directory {etcd_data_dir} is not empty: restore into a new directory")
    dsn = owner_dsn_of_empty_db
    report = RestoreReport(str(backup_dir), _safe(dsn))
    with _open_target(dsn, create_database) as conn:
        report.created_roles = _prepare_target(conn, manifest)
    _run([pg_bin("pg_restore"), "--no-owner", "--single-transaction", "--exit-on-error", f"--dbname={dsn}",
          str(backup_dir / PG_FILE)], f"pg_restore into {_safe(dsn)}")
    if etcd_data_dir is not None:
        report.etcd_data_dir = str(etcd_data_dir)
        try:
            report.etcd_revision = restore_etcd_member(backup_dir / ETCD_FILE, Path(etcd_data_dir), etcd_name,
                                                       etcd_peer_url, cluster_token=etcd_cluster_token)
        except BackupError as e:
            raise BackupError(f"{e} (Postgres was already restored into {_safe(dsn)})") from e
        if report.etcd_revision != manifest.etcd_revision:
            report.problems.append(f"etcd revision {report.etcd_revision} != manifest {manifest.etcd_revision}")
    if check:
        _check(dsn, manifest, report)
    report.seconds = time.perf_counter() - t0
    if report.problems:
        raise RestoreCheckFailed(report)
    return report


def _check(dsn: str, manifest: BackupManifest, report: RestoreReport) -> None:
    """Prove the restored database is the backed-up one: chain end, audit, digests, replay."""
    with psycopg.connect(dsn) as c:
        report.log_position = c.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
        row = c.execute("SELECT hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
        report.last_event_hash = bytes(row[0]).hex() if row else GENESIS_HEX
        report.restored_digest = digest(c)
        grants = c.execute("SELECT has_table_privilege(%s, 'events', 'INSERT')", (APP_ROLE,)).fetchone()[0]
    if (report.log_position, report.last_event_hash) != (manifest.log_position, manifest.last_event_hash):
        report.problems.append(f"log ends at {report.log_position}/{report.last_event_hash[:16]}, manifest says "
                               f"{manifest.log_position}/{manifest.last_event_hash[:16]}")
    if not grants:
        report.problems.append(f"{APP_ROLE} may not insert into events: grants were not restored")
    store = PostgresStore(dsn)
    try:
        audit = verify(store)
    finally:
        store.close()
    report.audit_events, report.audit_ok = audit.events, audit.ok
    if not audit.ok:
        first = audit.first_problem
        report.problems.append(f"audit verify fails at position {first.position}: {first.problem}")
    elif audit.last_hash != manifest.last_event_hash:
        report.problems.append("audit's chain end differs from the manifest's last hash")
    if report.restored_digest != manifest.projection_digest:
        report.problems.append("restored projection tables differ from the manifest's digest")
    rep = replay(dsn)
    report.live_digest, report.replay_digest = rep.live_digest, rep.replay_digest
    if not rep.equal:
        report.problems.append(f"replay differs from the restored projections in {', '.join(rep.differing_tables)}")
    if manifest.projection_complete and rep.replay_digest != manifest.projection_digest:
        report.problems.append("replay digest differs from the manifest's projection digest")
