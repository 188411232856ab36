"""R14 at a real trustee: it never signs two values for one transaction, and only one process signs per key.

Incidents replayed: a client asking twice with different values used to get its own trustee banned for
DOUBLE_VOTING (and a 503); two processes started on one key could each sign.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from helpers import wait_for

from devstack.trustees import TrusteeCluster
from events.postgres_store import PostgresStore

pytestmark = pytest.mark.integration


def test_a_client_retry_with_another_value_is_refused_and_nobody_is_banned(database, etcd_server, etcd_prefix,
                                                                            tmp_path):
    cluster = TrusteeCluster(4, 3, database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    cluster.start()
    try:
        code, first = cluster.cast(0, "x", 5)
        assert code == 202
        code, body = cluster.cast(0, "x", 6)
        assert code == 409, body
        assert [v["value"] for v in body["earlier"]] == [5] and "nothing signed" in body["error"]
        code, again = cluster.cast(0, "x", 5)  # the same value again: the earlier signed vote, byte for byte
        assert code == 202 and again["accepted"] == first["accepted"]
        # a batch with one conflicting ballot signs none of them
        code, body = cluster.cast_many(0, [("y", 1), ("x", 7)])
        assert code == 409 and [v["tx_id"] for v in body["earlier"]] == ["x"]
        assert cluster.counters(0).get("published_votes", 0) >= 1
        for i in (1, 2):
            assert cluster.cast(i, "x", 5)[0] == 202
        wait_for(lambda: (cluster.tx(3, "x") or {}).get("status") == "THRESHOLD_REACHED", 20, "consensus on x")
        assert cluster.tx(0, "y") is None  # withheld: never signed, never logged

        # a second process on trustee-1's key and journal: the local lock names the running one
        t0 = cluster.trustees[0]
        twin = dataclasses.replace(t0, proc=None, status={}, log=None)
        with pytest.raises(RuntimeError, match=r"pid \d+ on host"):
            cluster.start_node(twin, [cluster.trustees[1].status["listen_addrs"][0]])
        # ... and on another machine (a copy of the key, its own journal): the etcd instance claim does
        other = tmp_path / "elsewhere"
        other.mkdir()
        shutil.copy(t0.key_file, other / "trustee-1.key")
        (other / "trustee-1.key").chmod(0o600)
        shutil.copy(f"{t0.key_file}.journal", other / "trustee-1.key.journal")
        (other / "trustee-1.key.journal").chmod(0o600)
        shutil.copy(cluster.token_file(t0), other / "trustee-1.key.api-token")  # its API token, as on that machine
        remote = dataclasses.replace(t0, key_file=other / "trustee-1.key", proc=None, status={}, log=None)
        with pytest.raises(RuntimeError, match="another process signs as trustee-1"):
            cluster.start_node(remote, [cluster.trustees[1].status["listen_addrs"][0]])
        assert cluster._get(t0, "/healthz")[0] == 200  # the running one is untouched
    finally:
        cluster.destroy()
    store = PostgresStore(database.app_dsn)
    rows = store.read_all(limit=10_000)
    store.close()
    assert not [r for r in rows if r.event_type in ("NodeBanned", "ViolationDetected")]
    assert [r.payload["value"] for r in rows if r.event_type == "VoteAccepted" and r.payload["node_id"] == "trustee-1"
            ] == [5]
