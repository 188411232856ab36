"""Postgres HA (issue 17): the service on a Patroni cluster through one multi-host DSN, and a kill -9 of the primary.

What must hold across a failover: every acknowledged append is in the log once, positions stay gap-free,
the hash chain and every writer signature verify (``audit verify``), and an append whose connection
dropped mid-commit is resolved by its idempotency keys on the new primary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from helpers import wait_for

from chaos.pg_failover import AppendLoad, check_log
from devstack.patroni import Member, PatroniCluster
from devstack.trustees import SRC
from events.errors import StoreUnavailable
from events.postgres_store import PostgresStore
from projections.projector import Projector
from recording.recorder import Status
from tvote import db

pytestmark = pytest.mark.integration


def tvote(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from tvote.cli import app; app()", *args], capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin",
                                                      "COLUMNS": "200"})


LAST = "SELECT max(position), (SELECT hash FROM events ORDER BY position DESC LIMIT 1) FROM events"


def _has_database(dsn: str, name: str) -> bool:
    with psycopg.connect(dsn, connect_timeout=2) as c:
        return c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def wait_acks(load: AppendLoad, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(load.acked()) < n:
        assert time.monotonic() < deadline, f"only {len(load.acked())} of {n} batches acknowledged: {load.errors}"
        assert not load.unexpected, load.unexpected
        time.sleep(0.05)


def test_every_role_reaches_the_primary_through_the_multi_host_dsn(patroni, ha_database, etcd_server, etcd_prefix):
    primary = patroni.primary()
    assert primary is not None
    load = AppendLoad(ha_database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    load.found()
    load.start()
    wait_acks(load, 5, 30)
    load.stop()
    # the store's connection went to the one writable member
    with psycopg.connect(ha_database.app_dsn) as c:
        assert c.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone() == (primary.port, False)
    # the projector follows the log through it
    last = PostgresStore(ha_database.app_dsn).last_position()
    p = Projector(ha_database.app_dsn)
    p.catch_up()
    assert p.position() == last
    # the CLI takes it (one argument with spaces and commas)
    r = tvote("audit", "verify", "--dsn", ha_database.app_dsn)
    assert r.returncode == 0, r.stdout + r.stderr
    r = tvote("status", "--dsn", ha_database.app_dsn)
    assert r.returncode == 0, r.stdout + r.stderr
    # and alembic's URL form (the fixture migrated through it): head on this database
    with psycopg.connect(ha_database.owner_dsn) as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert check_log(ha_database.app_dsn, load).held


def test_a_dsn_naming_no_writable_member_is_refused_and_changes_nothing(patroni, ha_database, etcd_server,
                                                                         etcd_prefix):
    primary = patroni.primary()
    standbys = [m for m in patroni.members if m is not primary]
    dsn = (f"host={','.join('127.0.0.1' for _ in standbys)} port={','.join(str(m.port) for m in standbys)} "
           f"dbname={ha_database.name} user={db.APP_ROLE} target_session_attrs=read-write")
    for m in standbys:  # the database has reached them (the asynchronous one may lag): the refusal is theirs
        wait_for(lambda m=m: _has_database(patroni.member_dsn(m), ha_database.name), 30, f"{m.name} replays")
    before = PostgresStore(ha_database.app_dsn).last_position()
    with pytest.raises(StoreUnavailable, match=r"no writable member.*read-write"):
        AppendLoad(dsn, etcd_server.endpoints[0], etcd_prefix).found()
    assert PostgresStore(ha_database.app_dsn).last_position() == before
    r = tvote("status", "--dsn", dsn)
    assert r.returncode == 1
    assert "cannot reach Postgres (no writable member" in r.stdout, r.stdout


def test_kill_9_of_the_primary_under_load_loses_no_acknowledged_append(patroni: PatroniCluster, ha_database,
                                                                      etcd_server, etcd_prefix):
    old = patroni.primary()
    sync = patroni.sync_standby()
    assert old is not None and sync is not None and sync is not old
    load = AppendLoad(ha_database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    load.found()
    load.start()
    try:
        wait_acks(load, 20, 30)
        killed_at = time.monotonic()
        patroni.kill_member(old)
        new = patroni.wait_primary(60, other_than=old)
        acked_at_kill = len(load.acked())
        wait_acks(load, acked_at_kill + 20, 60)  # appends resume on the new primary
    finally:
        load.stop()
    figures = load.figures(killed_at)
    print("failover figures:", figures)
    assert new is sync, "Patroni promoted a member that was not the synchronous standby"
    check = check_log(ha_database.app_dsn, load)
    assert check.held, check
    assert not check.lost and not check.duplicated_votes and not check.gaps
    assert figures["unexpected"] == []
    # every batch whose connection dropped was resolved once: found in the log or appended, never both
    for b in load.acked():
        if b.retries:
            assert set(b.statuses) <= {"appended", "duplicate"}, b
    # the old primary comes back as a standby, rewound onto the new timeline, with the same log
    rejoin(patroni, old, ha_database)


def rejoin(patroni: PatroniCluster, old: Member, database) -> None:
    """Start a killed member again; wait until it streams as a standby and holds the primary's log."""
    patroni.start_member(old)
    with psycopg.connect(database.app_dsn) as c:
        want = c.execute(LAST).fetchone()

    def caught_up() -> bool:
        try:
            with psycopg.connect(patroni.member_dsn(old, database.name), connect_timeout=2) as c:
                return c.execute(LAST).fetchone() == want and c.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except psycopg.OperationalError:
            return False

    try:
        wait_for(caught_up, 90, f"{old.name} to rejoin with the log")
    except AssertionError:
        tail = [x for x in old.log_file.read_text().splitlines() if "no action" not in x][-40:]
        raise AssertionError(f"{old.name} did not rejoin: {patroni.cluster()}\n" + "\n".join(tail)) from None
    wait_for(lambda: patroni.streaming() == len(patroni.members) - 1 and patroni.sync_standby(), 30, "standbys")


def test_an_append_in_doubt_at_the_failover_is_found_by_its_idempotency_keys(patroni: PatroniCluster, ha_database,
                                                                             etcd_server, etcd_prefix):
    """The commit reached the synchronous standby but its acknowledgement never reached the client.

    The standby's WAL receiver is frozen (SIGSTOP) so the primary's commit waits for it (SyncRep); the
    primary is then killed: the client sees the connection drop mid-commit, in doubt. The receiver
    resumes and reads the commit the dead primary had already sent; Patroni promotes that standby. The
    node retries the same votes: their idempotency keys find them in the log, recorded once.
    """
    old, sync = patroni.primary(), patroni.sync_standby()
    assert old is not None and sync is not None
    load = AppendLoad(ha_database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    load.found()
    rec = load.recorder
    assert {r.status for r in rec.execute([x.receive("before", 1) for x in load.trustees[:3]])} == {Status.APPENDED}
    cmds = [x.receive("in_doubt", 1) for x in load.trustees[:3]]
    receiver = patroni.walreceiver_pid(sync)
    outcome: list = []
    os.kill(receiver, signal.SIGSTOP)
    try:
        t = threading.Thread(target=lambda: outcome.append(_try(rec.execute, cmds)))
        t.start()
        wait_for(lambda: _sync_waiters(patroni, old) > 0, 10, "the commit waiting for the standby")
        patroni.kill_member(old)
        t.join(30)
    finally:
        os.kill(receiver, signal.SIGCONT)
    assert isinstance(outcome[0], StoreUnavailable), outcome  # in doubt: the connection dropped mid-commit
    assert patroni.wait_primary(60, other_than=old) is sync
    results = wait_for(lambda: _try(rec.execute, cmds), 30, "the retry on the new primary")
    while isinstance(results, StoreUnavailable):  # the promotion may still be settling
        time.sleep(0.2)
        results = _try(rec.execute, cmds)
    assert [r.status for r in results] == [Status.DUPLICATE] * 3  # found by its keys: it had committed
    rows = PostgresStore(ha_database.app_dsn).read_stream("tx:in_doubt")
    assert sum(r.event_type == "VoteAccepted" for r in rows) == 3
    check = check_log(ha_database.app_dsn, load)
    assert check.held, check


def _try(fn, *args):
    try:
        return fn(*args)
    except StoreUnavailable as e:
        return e


def _sync_waiters(patroni: PatroniCluster, m: Member) -> int:
    with psycopg.connect(patroni.member_dsn(m), connect_timeout=2) as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").fetchone()[0]
