"""The backup and restore drill (issue 7, point 7): backup, wipe, restore, replay gives the same digest.

Runs on a private etcd (the drill deletes its data directory) and the session's Postgres.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pyetcd
import pytest
from helpers import trustees

from devstack.etcd import Etcd
from devstack.postgres import Postgres
from events.postgres_store import PostgresStore
from integration.test_projections import scenario
from projections.digest import digest
from projections.projector import Projector
from recording.etcd_guard import EtcdGuard
from recording.recorder import Recorder
from tvote.backup import (
    ETCD_FILE,
    MANIFEST,
    PG_FILE,
    CorruptBackup,
    RestoreCheckFailed,
    TargetNotEmpty,
    backup,
    restore,
)
from tvote.db import APP_ROLE

PREFIX = "/tvote"


@pytest.fixture
def own_etcd():
    e = Etcd(size=1, unsafe_tmpfs=True).start()
    yield e
    e.destroy()


@pytest.fixture
def fresh_db(pg_server):
    """A database name nobody uses yet; dropped afterwards whatever the test made of it."""
    name = f"restored_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def etcd_keys(port: int) -> dict[bytes, tuple[bytes, bool]]:
    """Every key under the prefix: value, and whether it lives under a lease."""
    c = pyetcd.client(host="127.0.0.1", port=port, timeout=5)
    try:
        return {md.key: (v, md.lease_id != 0) for v, md in c.get_prefix(PREFIX)}
    finally:
        c.close()


def build_log(database, etcd: Etcd) -> EtcdGuard:
    """The seed's scenarios, then one transaction recorded through the etcd guard, projected to the end.

    Returns the guard, still open: closing it revokes its lease and the vote claims under it.
    """
    scenario(database).store.close()
    ts = trustees(5)
    guard = EtcdGuard(etcd.endpoints[0], PREFIX, "node-b", lease_ttl=60)  # vote claims live under its lease
    rec = Recorder(PostgresStore(database.app_dsn), guard, ts[1].signer)  # node-2's node records them
    try:
        rec.execute([ts[1].receive("tx_etcd", 9), ts[2].receive("tx_etcd", 9)])
    finally:
        rec.store.close()
    p = Projector(database.app_dsn)
    p.catch_up()
    p.close()
    return guard


@pytest.fixture(params=["same-server", "new-server"])
def target_pg(request, pg_server):
    """Where the drill restores: the same Postgres, or a new cluster where the role tvote_app does not exist."""
    if request.param == "same-server":
        yield pg_server
        return
    with Postgres(fsync=False) as pg:
        yield pg


def test_drill_backup_wipe_restore_replay_same_digest(pg_server, database, own_etcd, target_pg, fresh_db, tmp_path):
    guard = build_log(database, own_etcd)
    with psycopg.connect(database.owner_dsn) as c:
        before = digest(c)
        position, last_hash = c.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
    keys_before = etcd_keys(own_etcd.members[0].client_port)
    assert any(b"/votes/tx_etcd/" in k for k in keys_before) and any(b"/streams/" in k for k in keys_before)

    manifest = backup(database.owner_dsn, own_etcd.endpoints[0], tmp_path / "backup")
    assert (manifest.log_position, manifest.last_event_hash) == (position, bytes(last_hash).hex())
    assert manifest.projection_digest == before and manifest.projection_complete
    assert APP_ROLE in manifest.grantee_roles
    assert {f.name for f in manifest.files} == {PG_FILE, ETCD_FILE}
    guard.close()

    # Wipe: the database and etcd with its data directory are gone.
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as c:
        c.execute(f'DROP DATABASE "{database.name}" WITH (FORCE)')
    etcd_dir = own_etcd.base_dir
    own_etcd.destroy()
    assert not etcd_dir.exists()

    target = Etcd(size=1, unsafe_tmpfs=True)  # not started: its member's data directory is restored first
    member = target.members[0]
    try:
        report = restore(tmp_path / "backup", target_pg.dsn(fresh_db), member.data_dir, etcd_name=member.name,
                         etcd_peer_url=member.peer_url, create_database=True)
        assert report.ok, report.problems
        assert report.replay_digest == report.live_digest == report.restored_digest == before
        assert report.audit_ok and report.audit_events == position
        assert (report.log_position, report.last_event_hash) == (position, bytes(last_hash).hex())
        assert report.etcd_revision == manifest.etcd_revision
        assert report.created_roles == ([] if target_pg is pg_server else [APP_ROLE])

        target.start()  # devstack's launcher on the restored data directory
        assert etcd_keys(member.client_port) == keys_before
    finally:
        target.destroy()

    # The service role can work on the restored log: the grants came back with it.
    with psycopg.connect(target_pg.dsn(fresh_db, user=APP_ROLE)) as c:
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == position
        assert c.execute("SELECT has_table_privilege('events', 'INSERT'), "
                         "NOT has_table_privilege('events', 'UPDATE')").fetchone() == (True, True)
    with psycopg.connect(target_pg.dsn(fresh_db)) as c, pytest.raises(psycopg.Error, match="append-only"):
        c.execute("DELETE FROM events")  # the trigger came back too: it stops even the owner


@pytest.fixture
def backup_dir(database, own_etcd, tmp_path) -> Path:
    guard = build_log(database, own_etcd)
    backup(database.owner_dsn, own_etcd.endpoints[0], tmp_path / "backup")
    guard.close()
    return tmp_path / "backup"


def _tables(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]


@pytest.mark.parametrize("name", [PG_FILE, ETCD_FILE])
def test_a_corrupted_backup_is_refused_and_nothing_restored(pg_server, backup_dir, fresh_db, tmp_path, name):
    path = backup_dir / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, same size
    path.write_bytes(bytes(data))
    pg_server.create_database(fresh_db)
    etcd_dir = tmp_path / "etcd-restored"
    with pytest.raises(CorruptBackup, match=f"{name} does not match its BLAKE3.*nothing was restored"):
        restore(backup_dir, pg_server.dsn(fresh_db), etcd_dir)
    assert _tables(pg_server.dsn(fresh_db)) == 0
    assert not etcd_dir.exists()


def test_a_backup_without_its_manifest_or_with_a_truncated_file_is_refused(pg_server, backup_dir, fresh_db):
    pg_server.create_database(fresh_db)
    dump = backup_dir / PG_FILE
    dump.write_bytes(dump.read_bytes()[:-10])
    with pytest.raises(CorruptBackup, match="bytes, the manifest says"):
        restore(backup_dir, pg_server.dsn(fresh_db))
    (backup_dir / MANIFEST).unlink()
    with pytest.raises(CorruptBackup, match="never finished"):
        restore(backup_dir, pg_server.dsn(fresh_db))
    assert _tables(pg_server.dsn(fresh_db)) == 0


def test_restore_into_a_non_empty_database_is_refused(pg_server, database, backup_dir, fresh_db, tmp_path):
    with psycopg.connect(database.owner_dsn) as c:
        events = c.execute("SELECT count(*) FROM events").fetchone()[0]
    with pytest.raises(TargetNotEmpty, match="is not empty"):
        restore(backup_dir, database.owner_dsn, tmp_path / "etcd-restored")
    with psycopg.connect(database.owner_dsn) as c:
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == events  # untouched
    assert not (tmp_path / "etcd-restored").exists()

    # An etcd data directory already in use is refused too, before Postgres is touched.
    used = tmp_path / "etcd-used"
    (used / "member").mkdir(parents=True)
    pg_server.create_database(fresh_db)
    with pytest.raises(TargetNotEmpty, match="etcd data directory"):
        restore(backup_dir, pg_server.dsn(fresh_db), used)
    assert _tables(pg_server.dsn(fresh_db)) == 0


def test_a_restore_that_does_not_match_its_manifest_fails_its_checks(pg_server, backup_dir, fresh_db):
    """The manifest's figures are what the restore proves: a log that ends elsewhere is reported, not accepted."""
    manifest = json.loads((backup_dir / MANIFEST).read_text())
    manifest["last_event_hash"] = "ab" * 32
    manifest["projection_digest"] = "cd" * 32
    (backup_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RestoreCheckFailed, match="log ends at") as e:
        restore(backup_dir, pg_server.dsn(fresh_db), create_database=True)
    report = e.value.report
    assert report.audit_ok and not report.ok
    assert any("projection tables differ" in p for p in report.problems)
    assert report.replay_digest == report.live_digest  # the log itself replays fine
