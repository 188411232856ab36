"""The seed's four Byzantine scenarios (section 3) end to end: N=5 node processes on loopback.

Every honest node must reach the same verdict and ban the same peer; the one cluster log
(R13) holds each vote once, verifies, and replays to the same projections (R12).
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import wait_for

from devstack.trustees import TrusteeCluster
from events.audit import verify
from events.postgres_store import PostgresStore
from node import duty
from projections.projector import Projector
from projections.replay import replay


def run_scenario(database, etcd_server, etcd_prefix, mode: str, deadline_ms: int = 30_000):
    cluster = TrusteeCluster(5, 4, database.app_dsn, etcd_server.endpoints[0], etcd_prefix,
                             byzantine={4: mode}, deadline_ms=deadline_ms)
    cluster.start()
    try:
        for i in range(5):
            code, _ = cluster.cast(i, "tx_001", 1)
            assert code == 202
        return cluster
    except BaseException:
        cluster.destroy()
        raise


def honest_views(cluster: TrusteeCluster, final: set[str]) -> list[dict]:
    def all_final():
        views = [cluster.tx(i, "tx_001") for i in range(4)]
        return views if all(v and v["status"] in final for v in views) else None

    return wait_for(all_final, 30, f"every honest node to reach {final}")


def check_log(database, expect_banned: list[str]) -> None:
    store = PostgresStore(database.app_dsn)
    rows = store.read_all(limit=100_000)
    votes = [(r.payload["tx_id"], r.payload["node_id"]) for r in rows if r.event_type == "VoteAccepted"]
    assert len(votes) == len(set(votes)), "a vote was recorded twice"
    banned = sorted(r.payload["node_id"] for r in rows if r.event_type == "NodeBanned")
    assert banned == expect_banned
    report = verify(store)
    assert report.ok, (report.integrity, report.evidence)
    p = Projector(database.app_dsn)
    p.catch_up()
    p.close()
    assert replay(database.owner_dsn).equal
    store.close()


@pytest.mark.parametrize(
    "mode,status,banned",
    [
        ("minority", "ABORTED_BYZANTINE", ["trustee-5"]),
        ("double", "ABORTED_BYZANTINE", ["trustee-5"]),
        ("forge", "THRESHOLD_REACHED", ["trustee-5"]),  # R7: the forger is banned, the tx goes on
    ],
)
def test_byzantine_scenario(database, etcd_server, etcd_prefix, mode, status, banned):
    cluster = run_scenario(database, etcd_server, etcd_prefix, mode)
    try:
        views = honest_views(cluster, {status})
        assert all(v["status"] == status for v in views)
        assert len({str(v) for v in views}) == 1, "honest nodes disagree"
        # the ban reaches the network edge of every honest node (R10)
        wait_for(lambda: all(cluster.counters(i).get("peers_banned") == 1 for i in range(4)), 20, "bans")
        # the banned trustee's own API refuses at once and says why (its votes would never be recorded)
        wait_for(lambda: cluster.tx(4, "tx_001") and cluster.tx(4, "tx_001")["status"] == status, 20,
                 "the banned node to follow the log")
        t0 = time.monotonic()
        code, body = cluster.cast(4, "tx_002", 1)
        assert code == 403 and "banned (R10)" in body["error"] and time.monotonic() - t0 < 2
    finally:
        took = cluster.destroy()
    assert max(took.values()) < 30
    check_log(database, banned)


def test_silent_node_is_penalised_not_banned(database, etcd_server, etcd_prefix):
    cluster = run_scenario(database, etcd_server, etcd_prefix, "silent", deadline_ms=3000)
    try:
        views = honest_views(cluster, {"THRESHOLD_REACHED"})
        assert all(v["votes"].keys() == {"trustee-1", "trustee-2", "trustee-3", "trustee-4"} for v in views)
        store = PostgresStore(database.app_dsn)

        def silent_recorded():
            rows = store.read_all(limit=100_000)
            return [r for r in rows if r.event_type == "ViolationDetected" and r.payload["kind"] == "SILENT_FAILURE"]

        silent = wait_for(silent_recorded, 30, "SILENT_FAILURE at the deadline")
        assert [r.payload["node_id"] for r in silent] == ["trustee-5"]  # fired once, by one node
        store.close()
    finally:
        cluster.destroy()
    check_log(database, [])


def test_join_leave_and_local_api_edges(database, etcd_server, etcd_prefix, tmp_path):
    cluster = TrusteeCluster(4, 3, database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    cluster.start()
    try:
        # the local API refuses anyone without the token, and bad input, with a clear error
        t0 = cluster.trustees[0]
        token, t0.token = t0.token, "wrong-token-wrong-token"
        assert cluster.cast(0, "tx", 1)[0] == 401
        assert cluster.trustees[1].token != token  # every node has a token of its own
        t0.token = token
        assert cluster.cast(0, "bad tx id!", 1)[0] == 400
        assert cluster.cast(0, "tx", -1)[0] == 400
        assert cluster.cast(0, "tx", 2**64)[0] == 400
        assert cluster._get(t0, "/healthz")[0] == 200

        # a new member admitted by an operator event joins via bootstrap + DHT, no restarts
        from devstack.trustees import Trustee, init_journal
        from node.p2p.identity import generate_key_file, load_seed

        key = tmp_path / "trustee-5.key"
        generate_key_file(key)
        init_journal(key, "trustee-5")  # provisioning a new trustee: its empty signing journal (R14)
        new = Trustee("trustee-5", key, load_seed(key))
        new.token = cluster._token(new)
        cluster.trustees.append(new)
        cluster.admit([new], configure=False)
        joined = time.monotonic()
        cluster.start_node(new, [t.status["listen_addrs"][0] for t in cluster.trustees[:2]])
        wait_for(lambda: cluster._get(new, "/readyz")[0] == 200, 30, "the new member ready")
        time.sleep(2.5)
        for i in range(5):
            assert cluster.cast(i, "tx_join", 9)[0] == 202
        views = wait_for(lambda: [v for v in (cluster.tx(i, "tx_join") for i in range(5))
                                  if v and len(v["votes"]) == 5 and v["status"] == "THRESHOLD_REACHED"] or None,
                         30, "five votes seen by the nodes")
        assert views and time.monotonic() - joined < 30 + 10

        # SIGTERM right after votes are cast: none is lost, each node exits within 30 s
        for i in range(5):
            cluster.cast(i, "tx_leave", 3)
    finally:
        took = cluster.destroy()
    assert max(took.values()) < 30
    store = PostgresStore(database.app_dsn)
    leave = [r for r in store.read_all(limit=100_000)
             if r.event_type == "VoteAccepted" and r.payload["tx_id"] == "tx_leave"]
    assert len(leave) == 5, "a vote cast before SIGTERM was lost"
    store.close()


def test_batch_cast_and_take_over_from_a_frozen_first_recorder(database, etcd_server, etcd_prefix):
    """A batch of ballots is durable when answered; a frozen first recorder delays, never loses, votes."""
    cluster = TrusteeCluster(4, 3, database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    cluster.start()
    try:
        batch = [(f"tx_b{k}", k) for k in range(50)]
        for i in range(4):
            code, body = cluster.cast_many(i, batch)
            assert code == 202 and len(body["accepted"]) == 50
        assert all(cluster.tx(0, tx)["status"] == "THRESHOLD_REACHED" for tx, _ in batch)
        # one bad entry refuses the whole request: nothing of it is cast
        code, body = cluster._request(cluster.trustees[0], "POST", "/votes",
                                      {"votes": [{"tx_id": "tx_ok", "value": 1}, {"tx_id": "bad id", "value": 1}]})
        assert code == 400 and "votes[1]" in body["error"]

        members = [t.node_id for t in cluster.trustees]
        firsts = [f"tx_f{k}" for k in range(400) if duty.ranking(f"tx_f{k}", members)[0] == "trustee-1"][:5]
        os.kill(cluster.trustees[0].proc.pid, signal.SIGSTOP)  # trustee-1 would record these first
        try:
            t0 = time.monotonic()
            with ThreadPoolExecutor(3) as pool:
                codes = list(pool.map(lambda i: cluster.cast_many(i, [(tx, 5) for tx in firsts])[0], (1, 2, 3)))
            assert codes == [202, 202, 202] and time.monotonic() - t0 < 8
            taken = sum(cluster.counters(i).get("standby_taken_over", 0) for i in (1, 2, 3))
            assert taken >= 3 * len(firsts)  # every vote of those was recorded by a member ranked later
        finally:
            os.kill(cluster.trustees[0].proc.pid, signal.SIGCONT)
        assert cluster.tx(0, "tx_ok") is None
    finally:
        cluster.destroy()
    check_log(database, [])


def test_each_vote_goes_to_its_recorders_and_every_transaction_still_reaches_consensus(database, etcd_server,
                                                                                      etcd_prefix):
    """Committee delivery aims each vote at the two members ranked first for its transaction besides its
    voter (node.duty.recipients), not at all N - 1: fewer copies, the same verdicts, each vote once."""
    cluster = TrusteeCluster(4, 3, database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    cluster.start()
    try:
        # Ready needs t - 1 peers, committee delivery all of them: until then messages take the mesh
        # (relayed, several copies each). Warm up until every node has sent one directly.
        warm = iter(range(1000))
        wait_for(lambda: [cluster.cast(i, f"tx_warm{next(warm)}", 1) for i in range(4)] and all(
            cluster.counters(i).get("gossip_direct_published", 0) > 0 for i in range(4)), 30, "committee delivery")
        before = [cluster.counters(i) for i in range(4)]
        txs = [f"tx_aim{k}" for k in range(12)]
        for tx in txs:
            for i in range(4):
                assert cluster.cast(i, tx, 7)[0] == 202
        wait_for(lambda: all((v := cluster.tx(i, tx)) and v["status"] == "THRESHOLD_REACHED"
                             for i in range(4) for tx in txs), 30, "every transaction at consensus on every node")
        wait_for(lambda: all(len(cluster.tx(0, tx)["votes"]) == 4 for tx in txs), 30, "every vote in the log")
        after = [cluster.counters(i) for i in range(4)]

        def grew(key: str) -> int:
            return sum(a.get(key, 0) - b.get(key, 0) for a, b in zip(after, before, strict=True))

        assert grew("gossip_targeted_published") > 0
        copies, published = grew("gossip_copies_in"), grew("gossip_published")
        assert copies < 3 * published, (copies, published)  # sent to everyone, each message is 3 copies
    finally:
        cluster.destroy()
    check_log(database, [])


def test_a_first_recorder_that_drops_every_vote_it_receives_costs_at_most_the_patience_and_wrongs_nobody(
        database, etcd_server, etcd_prefix):
    """Aimed delivery against a Byzantine recorder: trustee-1 stays connected and appends its own votes but
    drops every vote gossip brings it. The votes of the transactions it is ranked first for went to it and to
    the next member only: that member records them once trustee-1 looks gone or, while it still appends, once the
    patience has passed; nothing is lost, nobody is banned."""
    cluster = TrusteeCluster(4, 3, database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    cluster.trustees[0].drop_rate = 1.0
    cluster.start()
    try:
        members = [t.node_id for t in cluster.trustees]
        firsts = [tx for tx in (f"tx_d{k}" for k in range(400)) if duty.ranking(tx, members)[0] == "trustee-1"][:4]
        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda i: cluster.cast_many(i, [(tx, 3) for tx in firsts])[0], range(4)))
        took = time.monotonic() - t0
        assert codes == [202] * 4
        assert took < duty.DEFAULT_PATIENCE_MS / 1000 + 10, took  # the patience, not a deadline or a loss
        assert all(cluster.tx(1, tx)["status"] == "THRESHOLD_REACHED" for tx in firsts)
        assert cluster.counters(0).get("fault_dropped_messages", 0) > 0
    finally:
        cluster.destroy()
    check_log(database, [])


def _appends_of(rows) -> dict[int, int]:
    """Each row's append: the position its writer's signature starts at (the signed batch it belongs to)."""
    out: dict[int, int] = {}
    start = None
    for r in rows:
        start = r.position if start is None else start
        out[r.position] = start
        if r.signature is not None:
            assert r.signed_from == start
            start = None
    return out


def _holding_cluster(database, etcd_server, etcd_prefix, hold_ms: int, grace_ms: int, prefix: str, count: int):
    """N=4, t=3 started with this hold and grace, and ``count`` transactions trustee-1 records first."""
    cluster = TrusteeCluster(4, 3, database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    for t in cluster.trustees:
        t.extra_args = ["--record-hold-ms", str(hold_ms), "--record-grace-ms", str(grace_ms)]
    cluster.start()
    members = [t.node_id for t in cluster.trustees]
    firsts = [tx for tx in (f"{prefix}{k}" for k in range(400)) if duty.ranking(tx, members)[0] == "trustee-1"]
    return cluster, firsts[:count]


def _log_rows(database) -> list:
    store = PostgresStore(database.app_dsn)
    try:
        return store.read_all(limit=100_000)
    finally:
        store.close()


def test_the_first_recorder_appends_a_transactions_votes_together_without_holding_back_the_threshold(
        database, etcd_server, etcd_prefix):
    """node.duty.release_held: trustee-1, first for these transactions, holds their votes (here up to 1.5 s)
    and appends them when the threshold's vote arrives, not when the hold runs out: the threshold's three
    votes in one append, the last in at most one more, and every cast answered long before the hold."""
    cluster, firsts = _holding_cluster(database, etcd_server, etcd_prefix, 1500, 4000, "tx_h", 6)
    try:
        before = cluster.counters(0)
        for tx in firsts:
            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(lambda i, tx=tx: cluster.cast(i, tx, 9)[0], range(4)))
            assert codes == [202] * 4
        after = cluster.counters(0)
        assert after.get("held_released_threshold", 0) - before.get("held_released_threshold", 0) == len(firsts)
        assert after.get("held_released_hold", 0) == before.get("held_released_hold", 0)  # never ran out
        assert all(cluster.tx(0, tx)["status"] == "THRESHOLD_REACHED" for tx in firsts)
        rows = _log_rows(database)
        appends = _appends_of(rows)
        for tx in firsts:
            votes = [r for r in rows if r.event_type == "VoteAccepted" and r.payload["tx_id"] == tx]
            assert len(votes) == 4 and {r.writer for r in votes} == {"trustee-1"}
            assert len({appends[r.position] for r in votes[:3]}) == 1, tx  # the threshold's votes together
            assert len({appends[r.position] for r in votes}) <= 2, tx
    finally:
        cluster.destroy()
    check_log(database, [])


def test_a_hold_longer_than_half_the_grace_is_refused_at_start(database, etcd_server, etcd_prefix):
    cluster = TrusteeCluster(1, 1, database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    cluster.trustees[0].extra_args = ["--record-hold-ms", "300", "--record-grace-ms", "400"]
    with pytest.raises(RuntimeError, match="record_hold_ms 300 must be at most half of record_grace_ms 400"):
        cluster.start()
    cluster.destroy()


def test_a_first_recorder_killed_while_it_holds_votes_loses_none_of_them(database, etcd_server, etcd_prefix):
    """The hold keeps votes only in the first recorder's memory for a while; the voters and the next-ranked
    member hold them too. trustee-1 is SIGKILLed holding two votes short of the threshold: both casts are
    still answered 202 (the next member takes over one grace and one hold later), and the log has each once."""
    cluster, (tx,) = _holding_cluster(database, etcd_server, etcd_prefix, 1500, 3000, "tx_k", 1)
    try:
        held = cluster.counters(0).get("held", 0)
        with ThreadPoolExecutor(2) as pool:
            casts = [pool.submit(cluster.cast, i, tx, 4) for i in (1, 2)]
            wait_for(lambda: cluster.counters(0).get("held", 0) >= held + 2, 5, "trustee-1 to hold both votes")
            cluster.kill(0)
            assert [c.result()[0] for c in casts] == [202, 202]
        votes = [r for r in _log_rows(database) if r.event_type == "VoteAccepted" and r.payload["tx_id"] == tx]
        assert sorted(r.payload["node_id"] for r in votes) == ["trustee-2", "trustee-3"]
        assert "trustee-1" not in {r.writer for r in votes}
    finally:
        cluster.destroy()
