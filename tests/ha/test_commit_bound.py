"""A commit that waits for a synchronous standby is bounded (issue 17): past the bound the append is
StoreUnavailable, in doubt, never acknowledged; once a standby is back the retry finds it by its keys.

Postgres 15 ends a commit's wait for the synchronous standby only on a cancel, and then reports the
COMMIT as a success with a WARNING (committed on the primary alone). ``statement_timeout`` does not end
it. The first test shows both on one server whose synchronous standby never connects.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from helpers import wait_for

from chaos.pg_failover import AppendLoad, check_log
from devstack.patroni import PatroniCluster
from devstack.postgres import Postgres
from events.commit_bound import CommitBound, syncrep_cancelled
from events.errors import StoreUnavailable
from events.postgres_store import PostgresStore
from recording.recorder import Status

pytestmark = pytest.mark.integration
BOUND = 2.0
VOTES = "SELECT count(*) FROM events WHERE stream_id = %s AND event_type = 'VoteAccepted'"


def test_postgres_reports_a_cancelled_syncrep_wait_as_a_committed_transaction_with_a_warning():
    pg = Postgres(fsync=False).start()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("CREATE TABLE t (x int)")
            c.execute("ALTER SYSTEM SET synchronous_standby_names = 'ghost'")  # a standby that never comes
            c.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)
        warnings: list[bool] = []
        bound = CommitBound(BOUND, grace_s=1.0)
        with psycopg.connect(pg.dsn()) as conn:
            conn.add_notice_handler(lambda d: warnings.append(syncrep_cancelled(d)))
            conn.execute("SET LOCAL statement_timeout = '300ms'")
            conn.execute("INSERT INTO t VALUES (1)")
            started = time.monotonic()
            token = bound.arm(conn)
            conn.commit()  # no error: the cancel ends the wait, and the commit stands
            took = time.monotonic() - started
            assert bound.disarm(token)
        assert BOUND <= took < BOUND + 1.0, f"statement_timeout ended the wait after {took:.2f}s"
        assert warnings == [True]
        with psycopg.connect(pg.dsn()) as c:  # committed locally, visible to every reader there
            assert c.execute("SELECT array_agg(x) FROM t").fetchone()[0] == [1]
    finally:
        pg.destroy()


def test_an_append_with_no_synchronous_standby_is_given_up_in_doubt_and_found_once_on_retry(
        patroni: PatroniCluster, ha_database, etcd_server, etcd_prefix):
    primary = patroni.primary()
    standbys = [m for m in patroni.members if m is not primary]
    load = AppendLoad(ha_database.app_dsn, etcd_server.endpoints[0], etcd_prefix, commit_bound_s=BOUND)
    load.found()
    rec, store = load.recorder, load.recorder.store
    assert {r.status for r in rec.execute([x.receive("before", 1) for x in load.trustees[:3]])} == {Status.APPENDED}
    cmds = [x.receive("in_doubt", 1) for x in load.trustees[:3]]
    for m in standbys:
        patroni.stop_member(m)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="in doubt"):
            rec.execute(cmds)
        took = time.monotonic() - started
        assert took < BOUND + 3.0, f"the append took {took:.1f}s to give up (bound {BOUND}s)"
        assert store.unconfirmed
        # Postgres committed it on the primary alone: readers there see it, no standby has it
        with psycopg.connect(patroni.member_dsn(primary, ha_database.name)) as c:
            assert c.execute(VOTES, ("tx:in_doubt",)).fetchone()[0] == 3
        # a retry while no standby is back must not call it done from that read
        with pytest.raises(StoreUnavailable, match="in doubt"):
            rec.execute(cmds)
        assert store.unconfirmed
        patroni.start_member(standbys[0])
        wait_for(lambda: patroni.sync_standby() is standbys[0], 60, f"{standbys[0].name} back as sync standby")
        results = rec.execute(cmds)
    finally:
        patroni.heal()
    assert [r.status for r in results] == [Status.DUPLICATE] * 3  # found by its keys, not written again
    assert not store.unconfirmed and store.stats["confirmations"] == 1
    with psycopg.connect(patroni.member_dsn(standbys[0], ha_database.name)) as c:  # on the standby too
        assert c.execute(VOTES, ("tx:in_doubt",)).fetchone()[0] == 3
    assert PostgresStore(ha_database.app_dsn).read_stream("tx:in_doubt").__len__() >= 3
    load.stop()
    check = check_log(ha_database.app_dsn, load)
    assert check.held, check
