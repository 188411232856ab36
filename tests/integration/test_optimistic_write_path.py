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


def alone(rec: Recorder, voter) -> None:
    """Make ``rec`` the log's one writer lately: an append of its own that lands right after its read."""
    assert rec.execute([voter.receive("warm-up", 1)])[0].status is Status.APPENDED
    assert rec._alone


def test_an_unread_decision_that_lands_costs_no_read_and_matches_the_log(make_node):
    a = make_node(0)
    ts = found(a, 5, 3)
    reads = count_reads(a)
    assert a.execute([ts[0].receive("tx", 4)])[0].status is Status.APPENDED
    assert reads[0] == 1  # the operator wrote since a's read: a reads before deciding
    for x in ts[1:3]:
        assert a.execute([x.receive("tx", 4)])[0].status is Status.APPENDED
    assert reads[0] == 1  # then alone: decided on what it held; its own rows adopted, not read back
    folded = log_folds_to(a)
    assert a.ledger.txs["tx"].status == folded.txs["tx"].status == rules.THRESHOLD_REACHED
    assert a.position == a.store.last_position()


def test_off_reads_before_deciding_and_still_adopts_its_own_rows(make_node):
    a = make_node(0)
    ts = found(a, 3, 2)
    alone(a, ts[2])
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
    alone(b, ts[3])
    assert a.execute([ts[0].receive("tx", 1)])[0].status is Status.APPENDED
    # b has not read a's append: its unread decision opens "tx" again at version 0; the etcd head refuses it
    r = b.execute([ts[1].receive("tx", 1)])
    assert r[0].status is Status.APPENDED
    assert [e.TYPE for e in r[0].events] == ["VoteAccepted"]  # decided again, on the log
    assert b.stats["etcd_refusals"] + b.stats["conflicts"] >= 1
    rows = b.store.read_all(limit=10**6)
    assert sum(r.event_type == "TransactionOpened" and r.stream_id == tx_stream("tx") for r in rows) == 1
    assert b.ledger.txs["tx"].votes.keys() == {"node-1", "node-2"}
    assert log_folds_to(b).txs["tx"].votes.keys() == {"node-1", "node-2"}


def test_a_stale_rejection_is_decided_again_after_a_read(make_node):
    a = make_node(0)
    ts = found(a, 3, 2)
    alone(a, ts[2])
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
    alone(b, ts[3])
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
    alone(b, ts[2])

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


# a refused batch: the units the refusal does not concern are claimed again at once --------------------


def test_a_batch_refused_for_one_transaction_still_appends_the_others(make_node):
    a, b = make_node(0), make_node(1)
    ts = found(a, 4, 3)
    b.catch_up()
    alone(a, ts[3])
    assert b.execute([ts[2].receive("tx2", 1)])[0].status is Status.APPENDED
    # a has not read b's append: its unit for tx2 expects version 0 and is refused; tx1's unit is not concerned
    r = a.execute([ts[0].receive("tx1", 1), ts[1].receive("tx2", 1)])
    assert [x.status for x in r] == [Status.APPENDED, Status.APPENDED]
    assert a.stats["claims_split"] == 1
    assert [e.TYPE for e in r[1].events] == ["VoteAccepted"]  # tx2's vote decided again, on the log
    rows = a.store.read_all(limit=10**6)
    assert sum(x.event_type == "TransactionOpened" and x.stream_id in (tx_stream("tx1"), tx_stream("tx2"))
               for x in rows) == 2
    assert log_folds_to(a).txs["tx2"].votes.keys() == {"node-2", "node-3"}


def test_a_vote_claimed_elsewhere_is_deferred_and_the_rest_of_its_batch_lands(make_node):
    from events.model import CLUSTER_STREAM
    from recording.guard import Claim

    a, b = make_node(0), make_node(1)
    ts = found(a, 3, 2)
    b.catch_up()
    # b claims node-2's vote on tx2 in etcd and has not appended it yet (mid-flight, alive)
    cmd = ts[1].receive("tx2", 1)
    scratch = rules.Ledger()
    scratch.cluster, scratch.txs = b.ledger.cluster, dict(b.ledger.txs)
    decision = scratch.step(cmd)
    claim = Claim.of({CLUSTER_STREAM: b.versions[CLUSTER_STREAM], tx_stream("tx2"): 0},
                     {tx_stream("tx2"): len(decision.events)}, decision.effects)
    assert b.guard.claim([claim]) is None
    r = a.execute([ts[0].receive("tx1", 1), cmd])
    assert [x.status for x in r] == [Status.APPENDED, Status.DEFERRED]
    assert a.stats["claims_split"] == 1
    assert "tx1" in log_folds_to(a).txs


def test_untouched_units_are_those_reading_no_moved_stream_and_claiming_no_taken_vote():
    from events.model import CLUSTER_STREAM
    from recording.guard import Claim, Refusal

    def unit(tx: str, at: int, vote: str, writes_cluster: bool = False):
        written = {tx_stream(tx): 1} | ({CLUSTER_STREAM: 1} if writes_cluster else {})
        return (tx, None, Claim({CLUSTER_STREAM: 3, tx_stream(tx): at}, written, {vote: "{}"}), [])

    chunk = [unit("a", 0, "a/n1"), unit("b", 0, "b/n1"), unit("b", 1, "b/n2"), unit("c", 0, "c/n1")]
    heads = {CLUSTER_STREAM: 3, tx_stream("a"): None, tx_stream("b"): 4, tx_stream("c"): None}
    refusal = Refusal(heads, dict.fromkeys(heads, True), {})
    # b's stream moved: both of its units (the second was decided on top of the first) go round again
    assert [u[0] for u in Recorder._untouched(refusal, chunk)] == ["a", "c"]
    # a taken vote concerns its unit and every later unit reading what that unit writes
    heads[tx_stream("b")] = None
    refusal = Refusal(heads, dict.fromkeys(heads, True), {"b/n1": ("{}", 7, False)})
    assert [u[0] for u in Recorder._untouched(refusal, chunk)] == ["a", "c"]
    # a concerned unit that writes the cluster stream concerns everything after it (all read that stream)
    chunk[1] = unit("b", 0, "b/n1", writes_cluster=True)
    assert [u[0] for u in Recorder._untouched(refusal, chunk)] == ["a"]
    # the cluster stream itself moved: nothing is untouched
    heads[CLUSTER_STREAM] = 4
    assert Recorder._untouched(Refusal(heads, dict.fromkeys(heads, True), {}), chunk) == []


def test_a_recorder_that_read_another_writers_rows_reads_before_deciding(make_node):
    a, b = make_node(0), make_node(1)
    ts = found(a, 3, 2)
    alone(a, ts[2])
    b.catch_up()
    assert b.execute([ts[1].receive("tx", 1)])[0].status is Status.APPENDED
    a.catch_up()  # finds b's rows: another writer is active
    assert not a._alone
    reads = count_reads(a)
    assert a.execute([ts[0].receive("tx", 1)])[0].status is Status.APPENDED
    assert reads[0] == 1 and a.stats["etcd_refusals"] == 0  # read first: decided on the log, not refused
    assert a._alone  # and its append landed right after: alone again until it reads another's rows
