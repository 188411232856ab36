"""The optimistic write path (``Recorder.execute`` decides on the state it holds, unread) on real Postgres
and etcd: an unread decision that lands costs no read; a stale one never lands as decided (the etcd CAS or
Postgres refuses it and it is decided again on the log); a stale rejection is decided again after a read;
a crash between the claim and the append is repaired as before."""

from __future__ import annotations

import pytest
from helpers import OPERATOR, admin, trustees

from events import rules
from events.follow import Follower
from events.model import tx_stream
from events.postgres_store import PostgresStore
from recording.etcd_guard import EtcdGuard
from recording.recorder import Recorder, Status


@pytest.fixture
def make_node(database, etcd_server, etcd_prefix):
    made = []

    def make(index: int, signer=None) -> Recorder:
        signer = signer or trustees(6)[index].signer
        rec = Recorder(PostgresStore(database.app_dsn), EtcdGuard(etcd_server.endpoints[0], etcd_prefix,
                                                                  signer.writer, lease_ttl=2), signer)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.store.close()
        rec.guard.close()


def found(rec: Recorder, n: int, t: int) -> list:
    ts = trustees(n)
    op = Recorder(rec.store, rec.guard, OPERATOR)
    assert all(r.status is Status.APPENDED for r in op.execute(admin(ts, t)))
    rec.catch_up()
    return ts


def count_reads(rec: Recorder) -> list[int]:
    reads = [0]
    read_all = rec.store.read_all

    def counted(*a, **kw):
        reads[0] += 1
        return read_all(*a, **kw)

    rec.store.read_all = counted  # type: ignore[method-assign]
    return reads


def log_folds_to(rec: Recorder) -> rules.Ledger:
    """The log as an honest follower reads it from position 0 (every row checked): nothing void."""
    f = Follower(me="reader")
    settled = f.feed(rec.store.read_all(limit=10**6))
    assert all(s.void is None for s in settled)
    return f.ledger


def test_an_unread_decision_that_lands_costs_no_read_and_matches_the_log(make_node):
    a = make_node(0)
    ts = found(a, 5, 3)
    reads = count_reads(a)
    for x in ts[:3]:
        assert a.execute([x.receive("tx", 4)])[0].status is Status.APPENDED
    assert reads[0] == 0  # decided on what it held; its own rows adopted, not read back
    folded = log_folds_to(a)
    assert a.ledger.txs["tx"].status == folded.txs["tx"].status == rules.THRESHOLD_REACHED
    assert a.position == a.store.last_position()


def test_off_reads_before_deciding_and_still_adopts_its_own_rows(make_node):
    a = make_node(0)
    ts = found(a, 3, 2)
    a.optimistic = False
    reads = count_reads(a)
    assert a.execute([ts[0].receive("tx", 1)])[0].status is Status.APPENDED
    assert reads[0] == 1  # the read before deciding; its rows landed right after it: adopted, not read back


def test_a_fresh_recorder_reads_before_its_first_decision(make_node):
    a = make_node(0)
    ts = found(a, 3, 2)
    b = make_node(1)  # has never read the log: its empty state would reject every vote (no members)
    reads = count_reads(b)
    assert b.execute([ts[0].receive("tx", 1)])[0].status is Status.APPENDED
    assert reads[0] >= 1
    assert b.stats["optimistic_rereads"] == 0


def test_a_stale_decision_on_the_same_transaction_is_refused_and_decided_again(make_node):
    a, b = make_node(0), make_node(1)
    ts = found(a, 4, 3)
    b.catch_up()
    assert a.execute([ts[0].receive("tx", 1)])[0].status is Status.APPENDED
    # b has not read a's append: its unread decision opens "tx" again at version 0; the etcd head refuses it
    r = b.execute([ts[1].receive("tx", 1)])
    assert r[0].status is Status.APPENDED
    assert [e.TYPE for e in r[0].events] == ["VoteAccepted"]  # decided again, on the log
    assert b.stats["etcd_refusals"] + b.stats["conflicts"] >= 1
    rows = b.store.read_all(limit=10**6)
    assert sum(r.event_type == "TransactionOpened" for r in rows) == 1
    assert b.ledger.txs["tx"].votes.keys() == {"node-1", "node-2"}
    assert log_folds_to(b).txs["tx"].votes.keys() == {"node-1", "node-2"}


def test_a_stale_rejection_is_decided_again_after_a_read(make_node):
    a = make_node(0)
    ts = found(a, 3, 2)
    six = trustees(6)
    # the operator admits node-6 after a's last read: on a's unread state node-6 is an outsider
    op = Recorder(PostgresStore(a.store.dsn), a.guard, OPERATOR)
    op.catch_up()
    admit = rules.AdmitMember(six[5].node_id, six[5].vote_key, six[5].peer_id, "op")
    assert op.execute([admit])[0].status is Status.APPENDED
    op.store.close()
    r = a.execute([six[5].receive("tx", 1)])
    assert r[0].status is Status.APPENDED, r[0].error
    assert a.stats["optimistic_rereads"] == 1
    bad = a.execute([rules.ReceiveVote(ts[0].vote("tx9", 1), "stranger", 1)])  # relayed by an outsider
    assert bad[0].status is Status.REJECTED  # a true rejection stays one after the read
    assert type(bad[0].error).__name__ == "OutsiderVote"


def test_an_unread_append_after_another_writer_is_kept_and_their_rows_are_read(make_node):
    a, b = make_node(0), make_node(1)
    ts = found(a, 4, 3)
    b.catch_up()
    assert a.execute([ts[0].receive("tx1", 1)])[0].status is Status.APPENDED
    # b's decision on tx2 reads streams a did not move: it lands, after a's rows, and b reads those
    r = b.execute([ts[1].receive("tx2", 1)])
    assert r[0].status is Status.APPENDED
    assert b.position == b.store.last_position()
    assert "tx1" in b.ledger.txs and "tx2" in b.ledger.txs
    assert b.stats["void_rows"] == 0


def test_a_crash_between_the_claim_and_the_append_is_repaired_by_an_unread_writer(make_node):
    a, b = make_node(0), make_node(1)
    ts = found(a, 3, 2)
    b.catch_up()

    def crash(*_a, **_kw):
        raise SystemExit("crashed between the etcd claim and the Postgres commit")

    a.store.append = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        a.execute([ts[0].receive("tx", 1)])
    assert a.guard.head(tx_stream("tx")) == 2  # the head moved in etcd, nothing in Postgres
    a.guard.close()  # the crashed writer's lease ends (its writer mark and vote claim lapse)
    import time

    time.sleep(2.5)
    r = b.execute([ts[0].receive("tx", 1)])  # b never read a's (absent) rows: it repairs and appends
    if r[0].status is Status.DEFERRED:
        r = b.retry_deferred()
    assert r[0].status is Status.APPENDED
    assert b.store.stream_versions([tx_stream("tx")])[tx_stream("tx")] == 2
    assert log_folds_to(b).txs["tx"].votes.keys() == {"node-1"}


def test_reads_run_in_autocommit_and_appends_in_a_transaction(make_node):
    """A read is one statement in autocommit (one round trip); the connection is back in transaction mode
    after it, so an append's lock, rows and commit stay one transaction."""
    a = make_node(0)
    ts = found(a, 3, 2)
    a.store.read_all()
    assert a.store._conn is not None and a.store._conn.autocommit is False
    with pytest.raises(Exception):  # noqa: B017 - any database error: the read fails, the store survives it
        a.store._run(lambda conn: conn.execute("SELECT no_such_column FROM events").fetchall())
    assert a.store._conn.autocommit is False
    assert a.execute([ts[0].receive("tx", 1)])[0].status is Status.APPENDED


def test_a_connection_that_cannot_leave_autocommit_is_closed(database):
    from events.postgres_store import _leave_autocommit

    store = PostgresStore(database.app_dsn)
    conn = store._connection()
    conn.autocommit = True
    conn.execute("BEGIN")  # in a transaction psycopg refuses to change the mode
    _leave_autocommit(conn)
    assert conn.closed
    store.close()
