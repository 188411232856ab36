"""R13/R14 incidents replayed on real node processes: nobody honest is banned by what is not theirs.

- a row INSERTed as the service role (correctly hash-chained, naming a trustee as writer, no signature)
  that "bans" trustee-1: every node ignores it, trustee-1 keeps voting, the audit names the row;
- a VoteAccepted edited as superuser, then every node restarted: nobody is banned for it;
- a member added with a typo in its peer id: refused before it is logged, every node keeps running.
(A client retry with another value and two processes on one key: tests/nodes/test_signer_safety.py;
outages, crashes and lonely transactions: the R14 scenarios of tests/chaos.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
import pytest
from helpers import forge_row, wait_for

from devstack.trustees import TrusteeCluster
from events.audit import verify
from events.model import NodeBanned
from events.postgres_store import PostgresStore

pytestmark = pytest.mark.integration
TVOTE = [sys.executable, "-c", "from tvote.cli import app; app()"]


def consensus(cluster: TrusteeCluster, tx: str, value: int, who: range) -> None:
    for i in who:
        code, body = cluster.cast(i, tx, value)
        assert code == 202, (i, body)
    wait_for(lambda: (cluster.tx(0, tx) or {}).get("status") == "THRESHOLD_REACHED", 20, f"consensus on {tx}")


def test_forged_and_tampered_rows_ban_nobody_and_a_typo_crashes_nobody(database, etcd_server, etcd_prefix):
    cluster = TrusteeCluster(4, 3, database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    cluster.start()
    try:
        consensus(cluster, "before", 1, range(4))
        t1 = cluster.trustees[0]

        # 1. a forged NodeBanned(trustee-1), "written by" trustee-2, inserted as tvote_app
        forged = forge_row(database.app_dsn, NodeBanned("trustee-1", t1.peer_id, "DOUBLE_VOTING", "made-up"),
                           "trustee-2")
        consensus(cluster, "after_forgery", 2, range(4))  # trustee-1 still votes, and its vote counts
        assert all(cluster.counters(i).get("void_rows", 0) >= 1 for i in range(4))
        report = verify(PostgresStore(database.app_dsn))
        assert any(f.position == forged and "no writer signature covers" in f.problem for f in report.integrity), \
            report.integrity
        out = subprocess.run([*TVOTE, "audit", "verify", "--dsn", database.app_dsn], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 1 and f"position {forged}" in out.stdout, out.stdout

        # 2. trustee-2's accepted vote edited as superuser, then every node restarted
        with psycopg.connect(database.owner_dsn) as c:
            c.execute("SET session_replication_role = replica")
            (pos,) = c.execute("SELECT position FROM events WHERE event_type = 'VoteAccepted' "
                               "AND payload->>'tx_id' = 'before' AND payload->>'node_id' = 'trustee-2'").fetchone()
            c.execute("UPDATE events SET payload = jsonb_set(payload, '{value}', '9') WHERE position = %s", (pos,))
        for i in range(4):
            cluster.kill(i)
        cluster.restart_all()
        consensus(cluster, "after_restart", 3, range(4))
        assert cluster.cast(1, "before", 1)[0] in (202, 503)  # its real vote again: never a double vote

        # 3. a member with a typo in its peer id: refused with a clear error, nothing logged
        key_file = str(cluster.base / "operator-devstack.key")
        out = subprocess.run([*TVOTE, "members", "add", "trustee-9", "ab" * 32, "bad-peer-0",
                              "--dsn", database.app_dsn, "--etcd", cluster.etcd, "--etcd-prefix", cluster.prefix,
                              "--operator", "devstack", "--operator-key-file", key_file],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "is not the libp2p id of vote key" in out.stdout, out.stdout + out.stderr
        consensus(cluster, "after_typo", 4, range(4))
        assert all(cluster._get(t, "/healthz")[0] == 200 for t in cluster.trustees)
    finally:
        cluster.destroy()
    with psycopg.connect(database.app_dsn) as c:
        kinds = c.execute("SELECT event_type, payload FROM events WHERE event_type IN "
                          "('NodeBanned', 'ViolationDetected', 'InvalidEntryReported') ORDER BY position").fetchall()
        rows = c.execute("SELECT position, stream_id, stream_version, event_type, writer, payload, command IS NOT NULL "
                         "FROM events ORDER BY position").fetchall()
    blamed = [(t, p.get("node_id", p.get("writer"))) for t, p in kinds]
    assert blamed == [("NodeBanned", "trustee-1")], json.dumps(kinds) + "\n" + "\n".join(map(str, rows))  # forged


@pytest.mark.parametrize("which", ["worker", "gossip"])
def test_a_dead_thread_makes_the_node_exit_non_zero_with_its_cause(database, etcd_server, etcd_prefix, which):
    """Never a silent zombie answering /healthz 200: the process says why and exits for a supervisor."""
    cluster = TrusteeCluster(1, 1, database.app_dsn, etcd_server.endpoints[0], etcd_prefix,
                             byzantine={0: f"die-{which}"})
    cluster.start()
    try:
        t = cluster.trustees[0]
        assert t.proc.wait(30) != 0
        log = t.log.read_text()
        assert "is unhealthy, exiting" in log and (
            "thread _work died" if which == "worker" else "gossip thread ended") in log, log[-2000:]
    finally:
        cluster.destroy()


def test_a_vote_signed_in_time_that_reached_the_log_late_withdraws_the_silence(database, etcd_server, etcd_prefix):
    """R9/R14: trustee-3 signed its vote, then crashed before it left the process (a partition or an outage
    would hold it the same way). The deadline charges it silent; restarted, it sends the vote its journal
    holds and the log lacks, and the silence is withdrawn with the penalty given back."""
    import nacl.signing

    from devstack.trustees import load_seed
    from events.follow import Follower
    from node.signer import Signer

    cluster = TrusteeCluster(3, 2, database.app_dsn, etcd_server.endpoints[0], etcd_prefix, deadline_ms=3000)
    cluster.start()
    try:
        t3 = cluster.trustees[2]
        cluster.kill(2)
        with Signer.open(f"{t3.key_file}.journal", nacl.signing.SigningKey(load_seed(t3.key_file)), t3.node_id) as s:
            (signed,) = s.sign_many([("held_back", 5)], time.time_ns() // 1_000_000)  # signed, never sent
        consensus(cluster, "held_back", 5, range(2))

        def follow() -> list:
            f = Follower(trust_own=False)
            return [x.event for x in f.feed(PostgresStore(database.app_dsn).read_all(limit=10**6)) if x.event]

        def named(kind: str) -> list:
            return [e for e in follow() if type(e).__name__ == kind and getattr(e, "node_id", "") == t3.node_id]

        (silence,) = wait_for(lambda: named("ViolationDetected"), 30, "the deadline to charge trustee-3 silent")
        assert silence.kind == "SILENT_FAILURE" and silence.tx_id == "held_back"
        cluster.restart(2)
        (withdrawn,) = wait_for(lambda: named("SilenceWithdrawn"), 30, "trustee-3's vote to withdraw its silence")
        assert withdrawn.vote == signed.vote.to_json()
        assert cluster.counters(2).get("resent_from_journal") == 1
        reputation = [e for e in named("ReputationChanged")]
        assert reputation[-1].reason == "SILENCE_WITHDRAWN" and reputation[-1].score == 1000
        assert not named("NodeBanned")
    finally:
        cluster.destroy()
