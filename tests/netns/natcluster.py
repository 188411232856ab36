"""Trustees behind NATs reach consensus through a relay run by another trustee (run as a script, see below).

Issue 18, item 7. Hosts, one network namespace each: the operator (this process), Postgres, one etcd,
trustee-1 and trustee-2 on the bridge, and trustee-3 and trustee-4 each behind a NAT router of its own
(``nat-3``, ``nat-4``: masquerade, no inbound port; devstack.nat). trustee-3 and trustee-4 can dial out
to everyone, nobody can dial them, and they cannot reach each other at all except through a relay.
trustee-1 runs the relay service; trustee-2 is Byzantine (double votes). N=4, t=3.

What it checks, printing one JSON line of what it measured, exiting non-zero on the first failure:
1. trustee-3 and trustee-4 learn they are not publicly reachable (AutoNAT: gossip_reachability == 2),
   reserve a slot on trustee-1, and connect to each other through it (gossip_relayed_peers >= 1);
   trustee-2, given the relay too, learns it is public (1) and reserves nothing;
2. trustee-2 double votes: every honest node, the two behind NATs included, ends the transaction
   alike and bans trustee-2 at its network edge (peers_banned == 1): the ban reaches them;
3. after the ban the three honest trustees (t = 3: every one of them is needed) reach consensus on
   three transactions; trustee-4 published its votes on the direct topic (every member connected,
   trustee-3 only through the relay; a direct message is never forwarded by a third member) and
   trustee-3 received at least two messages per transaction: so votes crossed the relay both ways;
4. the audit holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
sys.path[:0] = [str(SRC), str(SRC.parent / "tests")]

from helpers import wait_for  # noqa: E402

from devstack.etcd import Etcd  # noqa: E402
from devstack.nat import behind_nat  # noqa: E402
from devstack.netns import Host, TestNetwork, enter_netns  # noqa: E402
from devstack.postgres import Postgres  # noqa: E402
from devstack.trustees import Trustee, TrusteeCluster  # noqa: E402
from events.audit import verify  # noqa: E402
from events.postgres_store import PostgresStore  # noqa: E402
from events.vocab import FINAL, TxStatus  # noqa: E402
from tvote import db  # noqa: E402

NATTED = {"t3": "nat-3", "t4": "nat-4"}


class NatCluster(TrusteeCluster):
    """A TrusteeCluster whose trustees 3 and 4 sit behind NATs and reserve on trustee-1's relay."""

    def __init__(self, *a, natted: set[str], **kw) -> None:
        super().__init__(*a, **kw)
        self.natted = natted

    def start(self) -> NatCluster:
        self.admit()
        first = self.trustees[0]
        first.extra_args = ["--relay-service"]
        self.start_node(first, [])
        relay = first.status["listen_addrs"][0]
        for t in self.trustees[1:]:
            t.extra_args = ["--relay", relay]  # trustee-2 too: AutoNAT must find it public
            self.start_node(t, first.status["listen_addrs"][:1] + self._some_addrs(t))
        for t in self.trustees:
            wait_for(lambda t=t: self._started(t), 60, f"{t.node_id} ready")
        return self

    def _request(self, t: Trustee, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        host: Host | None = self.host_of(t)
        if host is not None and host.name in self.natted:  # its API is on its LAN: ask from there
            return host.call(super()._request, t, method, path, body, timeout=120)
        return super()._request(t, method, path, body)


def main() -> dict:
    out: dict = {}
    net = TestNetwork(["op", "pg", "e0", "t1", "t2", *NATTED.values()]).start()
    try:
        hosts = [net["t1"], net["t2"], *(behind_nat(net, t, r) for t, r in NATTED.items())]
        with enter_netns(net["op"].ns):
            pg = Postgres(host=net["pg"].ip, prefix=net["pg"].prefix).start()
            etcd = Etcd(size=1, hosts=[net["e0"].ip], prefixes=[net["e0"].prefix])
            etcd.start()
            cluster = None
            try:
                pg.create_database("tvote")
                db.upgrade(pg.url("tvote"))
                dsn = pg.dsn("tvote", user=db.APP_ROLE)
                cluster = NatCluster(4, 3, dsn, ",".join(etcd.endpoints), "/tvote", deadline_ms=10_000,
                                     hosts=hosts, byzantine={1: "double"}, natted=set(NATTED))
                t0 = time.monotonic()
                cluster.start()
                out["cluster_start_s"] = round(time.monotonic() - t0, 1)

                # 1. reachability, reservations, the relayed link between the two NATed trustees
                def nat_state() -> list | None:
                    c = [cluster.counters(i) for i in range(4)]
                    ok = (all(c[i].get("gossip_reachability") == 2 and c[i].get("gossip_relay_reservations", 0) >= 1
                              and c[i].get("gossip_relayed_peers", 0) >= 1 for i in (2, 3))
                          and c[1].get("gossip_reachability") == 1)
                    return c if ok else None

                t0 = time.monotonic()
                c = wait_for(nat_state, 60, "NATed trustees private, reserved and linked through the relay")
                out["nat_linked_s"] = round(time.monotonic() - t0, 1)
                out["reachability"] = [x.get("gossip_reachability") for x in c]
                out["relayed_dials"] = [x.get("gossip_relayed_dials") for x in c]
                assert c[1].get("gossip_relay_reservations") == 0, "a public trustee reserved a relay slot"

                # 2. the Byzantine trustee-2 double votes; the ban reaches the trustees behind NATs
                for i in range(4):
                    code, body = cluster.cast(i, "x", 1)
                    assert code in (202, 403), (i, code, body)
                # a final status at each (its log may trail the others' by a follow: COLLECTING is not an end)
                views = wait_for(lambda: (lambda v: v if all(x and x["status"] in FINAL for x in v) else None)(
                    [cluster.tx(i, "x") for i in (0, 2, 3)]), 60, "every honest node to end x")
                assert {v["status"] for v in views} == {TxStatus.ABORTED_BYZANTINE}, views
                out["x_status"] = views[0]["status"]
                t0 = time.monotonic()
                wait_for(lambda: all(cluster.counters(i).get("peers_banned") == 1 for i in (0, 2, 3)), 30,
                         "the ban of trustee-2 at every honest node's edge")
                out["ban_reached_s"] = round(time.monotonic() - t0, 1)

                # 3. consensus among the three honest trustees, votes across the relay both ways
                before = {i: cluster.counters(i) for i in (2, 3)}
                t0 = time.monotonic()
                txs = ["a", "b", "c"]
                for tx in txs:
                    for i in (0, 2, 3):
                        code, body = cluster.cast(i, tx, 7)
                        assert code == 202, (i, tx, code, body)
                    time.sleep(0.3)
                for tx in txs:
                    for i in (0, 2, 3):
                        v = wait_for(lambda i=i, tx=tx: (lambda x: x if x and x["status"] == "THRESHOLD_REACHED"
                                                         else None)(cluster.tx(i, tx)), 60, f"consensus on {tx}")
                        assert set(v["votes"]) >= {"trustee-1", "trustee-3", "trustee-4"}, v
                out["consensus_3_s"] = round(time.monotonic() - t0, 2)
                time.sleep(1)
                after = {i: cluster.counters(i) for i in (2, 3)}
                delta = {i: {k: after[i].get(f"gossip_{k}", 0) - before[i].get(f"gossip_{k}", 0)
                             for k in ("direct_published", "delivered", "relayed_dials")} for i in (2, 3)}
                out["delta"] = {f"trustee-{i + 1}": d for i, d in delta.items()}
                assert delta[3]["direct_published"] >= len(txs), delta
                assert delta[2]["delivered"] >= 2 * len(txs), delta
                assert delta[2]["direct_published"] >= len(txs), delta
                assert delta[3]["delivered"] >= 2 * len(txs), delta

                # 4. the log's audit
                store = PostgresStore(dsn)
                report = verify(store)
                store.close()
                assert report.ok, (report.integrity, report.evidence)
            finally:
                if cluster is not None:
                    cluster.destroy()
                etcd.destroy()
                pg.destroy()
    finally:
        net.close()
    # the NAT hosts' namespaces (and with them their veths and the routers' rules) went with the run
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    out["leftover"] = [ns for ns in net.namespaces if ns in listed.split()]
    assert not out["leftover"], out["leftover"]
    return out


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
