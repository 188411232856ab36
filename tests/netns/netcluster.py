"""A trustee cluster across hosts of a test network, with a real partition (run as a script, see below).

Nine hosts, one network namespace each: the operator (this process), Postgres, three etcd members and
four trustees, each trustee listening on its own address (libp2p, and its API over TLS). Run as a
child process because it moves its main thread into the operator's host before any gRPC thread
exists (devstack.netns.enter_netns); prints one JSON line of what it measured; exits non-zero on
the first thing that does not hold.

What it checks (issue 18, R9/R14):
1. consensus across hosts: each trustee's vote reaches the others over the bridge;
2. trustee-4 cut off from its peers and the stores (its client still reaches it) signs its vote on
   ``b``; the other three reach consensus and the deadline charges trustee-4 silent;
3. the partition heals: trustee-4's vote, signed before the deadline, reaches the log, and the
   silence is withdrawn; nobody is banned and the audit holds.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
sys.path[:0] = [str(SRC), str(SRC.parent / "tests")]

from helpers import wait_for  # noqa: E402

from devstack.etcd import Etcd  # noqa: E402
from devstack.netns import TestNetwork, enter_netns  # noqa: E402
from devstack.postgres import Postgres  # noqa: E402
from devstack.trustees import TrusteeCluster  # noqa: E402
from events.audit import verify  # noqa: E402
from events.follow import Follower  # noqa: E402
from events.postgres_store import PostgresStore  # noqa: E402
from tvote import db  # noqa: E402

TRUSTEES = [f"t{i}" for i in range(1, 5)]
STORES = ["pg", "e0", "e1", "e2"]


def log_events(dsn: str) -> list:
    store = PostgresStore(dsn)
    try:
        return [s.event for s in Follower(trust_own=False).feed(store.read_all(limit=10**6)) if s.event]
    finally:
        store.close()


def main() -> dict:
    out: dict = {}
    net = TestNetwork(["op", *STORES, *TRUSTEES]).start()
    try:
        with enter_netns(net["op"].ns):  # this thread, before any gRPC: every address is one hop away
            pg = Postgres(host=net["pg"].ip, prefix=net["pg"].prefix).start()
            etcd = Etcd(size=3, hosts=[net[e].ip for e in STORES[1:]], prefixes=[net[e].prefix for e in STORES[1:]])
            etcd.start()
            cluster = None
            try:
                pg.create_database("tvote")
                db.upgrade(pg.url("tvote"))
                dsn = pg.dsn("tvote", user=db.APP_ROLE)
                cluster = TrusteeCluster(4, 3, dsn, ",".join(etcd.endpoints), "/tvote", deadline_ms=3000,
                                         hosts=[net[t] for t in TRUSTEES])
                t0 = time.monotonic()
                cluster.start()
                out["cluster_start_s"] = round(time.monotonic() - t0, 1)
                addrs = {t.node_id: t.status["listen_addrs"][0].split("/")[2] for t in cluster.trustees}
                assert addrs == {f"trustee-{i}": net[f"t{i}"].ip for i in range(1, 5)}, addrs

                # 1. consensus across hosts
                t0 = time.monotonic()
                for i in range(4):
                    code, body = cluster.cast(i, "a", 1)
                    assert code == 202, (i, code, body)
                wait_for(lambda: (cluster.tx(0, "a") or {}).get("status") == "THRESHOLD_REACHED", 30, "consensus on a")
                out["consensus_a_s"] = round(time.monotonic() - t0, 2)

                # 2. trustee-4 cut off from peers and stores; its client still reaches it
                net.partition(["t4"], ["t1", "t2", "t3", *STORES])
                answer: dict = {}
                late = threading.Thread(target=lambda: answer.update(r=cluster.cast(3, "b", 2)))
                late.start()
                time.sleep(0.5)  # trustee-4 signs first: its vote is older than the transaction's deadline
                for i in range(3):
                    code, body = cluster.cast(i, "b", 2)
                    assert code == 202, (i, code, body)

                def silence_on_b() -> list:
                    return [e for e in log_events(dsn) if type(e).__name__ == "ViolationDetected"
                            and e.tx_id == "b" and e.node_id == "trustee-4"]

                wait_for(silence_on_b, 30, "the deadline to charge trustee-4 silent on b")
                late.join(60)
                out["cut_off_cast"] = answer.get("r", (None,))[0]  # 503: signed, not in the log within 10 s

                # 3. heal: the vote signed before the deadline reaches the log and withdraws the silence
                net.heal()
                t0 = time.monotonic()

                def withdrawn() -> list:
                    return [e for e in log_events(dsn) if type(e).__name__ == "SilenceWithdrawn"
                            and e.tx_id == "b" and e.node_id == "trustee-4"]

                wait_for(withdrawn, 120, "trustee-4's vote to withdraw its silence after the heal")
                out["withdrawn_after_heal_s"] = round(time.monotonic() - t0, 1)
                events = log_events(dsn)
                assert not [e for e in events if type(e).__name__ == "NodeBanned"], "somebody was banned"
                store = PostgresStore(dsn)
                report = verify(store)
                store.close()
                assert report.ok, (report.integrity, report.evidence)
                out["events"] = len(events)
            finally:
                if cluster is not None:
                    cluster.destroy()
                etcd.destroy()
                pg.destroy()
    finally:
        net.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
