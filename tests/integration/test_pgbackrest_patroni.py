"""pgBackRest mode on a Patroni cluster: every member archives (when primary) into one stanza, the backup is
taken from the primary, and a position appended after a failover is restored from the new primary's WAL.

The archive settings go into each member's ``postgresql.parameters`` (its own data directory in its
``archive_command``); ``devstack.patroni`` is used as is, through a subclass here.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from helpers import Writers, trustees, wait_for
from services import Database

from devstack.patroni import SCOPE, Member, PatroniCluster, patroni_bin
from events.postgres_store import PostgresStore
from integration.test_projections import scenario
from tvote import db
from tvote.pgbackrest import Stanza, archive_settings, backup, restore_to_position, switch_wal

pytestmark = pytest.mark.skipif(shutil.which("pgbackrest") is None or patroni_bin() is None,
                                reason="pgbackrest or patroni not installed (./dev bootstrap)")


class ArchivingPatroni(PatroniCluster):
    """Patroni members whose ``postgresql.parameters`` archive into one pgBackRest stanza."""

    def __init__(self, *args: object, stanza: Stanza, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.stanza = stanza

    def _config(self, m: Member) -> dict:
        config = super()._config(m)
        config["postgresql"]["parameters"].update(archive_settings(self.stanza, m.data_dir))
        return config


def _append(dsn: str, tag: str, batches: int) -> None:
    ts = trustees(5)
    rec = Writers(PostgresStore(dsn), voter=ts[2])
    try:
        for i in range(batches):
            rec.execute([x.receive(f"tx_{tag}_{i}", 3) for x in ts[:4]])
    finally:
        rec.store.close()


def _end(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT max(position) FROM events").fetchone()[0]


def test_backup_from_the_primary_and_restore_across_a_failover(etcd_server):
    base = Path(tempfile.mkdtemp(prefix="tvote-pgbr-ha-"))
    base.chmod(0o755)
    stanza = Stanza("ha", base / "repo")
    cluster = ArchivingPatroni(etcd_server.endpoints, size=3, fsync=False, scope=f"{SCOPE}-{uuid.uuid4().hex[:6]}",
                               service_prefixes=("/tvote", "/t/"), stanza=stanza)
    try:
        cluster.start()
        cluster.create_database("tv")
        db.upgrade(cluster.url("tv"))
        database = Database(cluster, "tv")  # type: ignore[arg-type]
        scenario(database).store.close()
        report = backup(database.owner_dsn, stanza)  # the multi-host DSN reaches the primary
        _append(database.app_dsn, "before", 2)
        before = _end(database.owner_dsn)

        old = cluster.primary()
        cluster.kill_member(old)
        new = cluster.wait_primary(other_than=old)
        # a commit is acknowledged only once a synchronous standby holds it (the store's commit bound): wait
        # for the new primary to have one, as a node's worker would by retrying
        wait_for(lambda: cluster.sync_standby() is not None, 60, "a synchronous standby for the new primary")
        _append(database.app_dsn, "after", 2)  # on the new primary, a new timeline
        after = _end(database.owner_dsn)
        switch_wal(database.owner_dsn, stanza, timeout=60)  # the new primary archives into the same stanza

        r = restore_to_position(database.owner_dsn, stanza, after, base / "restored")
        assert r.ok, r.problems
        assert (r.backup_label, r.target_type, r.log_position) == (report.label, "xid", after)
        assert r.replay_digest == r.source_digest and r.audit_ok
        assert new.name != old.name and before < after
        shutil.rmtree(base / "restored")
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
