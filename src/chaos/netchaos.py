"""Chaos on a real network: the chaos scenarios with every trustee, Postgres and each etcd member on a host of
its own (devstack.netns), and faults made by cutting links rather than freezing processes (issue 18).

Hosts: ``op`` (this harness: the clients, the observer, anvil and the submitter), ``pg``, ``e0``-``e2``
and ``t1``-``tN``. Each scenario is ``chaos.scenarios.run`` (fresh log, load, invariants) plus a fresh
ThresholdRecord contract and a submitter, so "one chain write per consensus" is checked too. Faults:

- ``split``: the seed's partition (section 10.3): the trustees split in two; the stores on the majority's
  side (the minority reaches nobody but its clients' observer) or on both sides (the minority still reaches
  etcd and Postgres, only the other trustees are cut). With the stores on the majority's side, the
  minority's clients hold their casts until the heal (a node that cannot reach the log cannot acknowledge
  a vote); with the stores reachable, they keep casting.
- ``cut_from_peers``: one trustee cut from every other trustee, both ways, not from the stores.
- ``one_way``: nothing from one trustee reaches the others; their packets still reach it (TCP then fails
  both ways, see docs/netns.md; the asymmetry is at the packet level).
- ``link_loss``: each trustee's link drops a fraction of its packets in and out (``iptables -m statistic``),
  so TCP retransmits: trustee to store crosses one lossy link, trustee to trustee two.
- ``bandwidth``: each trustee's link capped with ``tc tbf``.
- ``etcd_leader_isolated``: the etcd leader cut from the other members and from everybody else (it is not
  killed): the others elect a new leader; the nodes fail over across their endpoints.

Runs in a process of its own (``python -m chaos.netchaos``): it moves its main thread into the ``op``
host before any gRPC thread exists, which a pytest process that already used etcd cannot do. Prints one
``RESULT {json}`` line per scenario. Needs root.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos import scenarios
from chaos.harness import ChaosEnv, wait_for
from chaos.scenarios import Ctx, Fault, SubmitterRig
from devstack.etcd import Etcd
from devstack.netns import Host, TestNetwork
from devstack.postgres import Postgres

STORES = ("pg", "e0", "e1", "e2")
MAX_TRUSTEES = 8


def trustee(i: int) -> str:
    """The host of trustee index ``i`` (0-based)."""
    return f"t{i + 1}"


class NetChaosEnv(ChaosEnv):
    """ChaosEnv on a test network: Postgres and each etcd member on hosts of their own; trustees on ``t1``..."""

    def __init__(self, net: TestNetwork, base: Path) -> None:
        self.net = net
        self.pg = Postgres(fsync=True, host=net["pg"].ip, prefix=net["pg"].prefix)
        self.etcd = Etcd(size=3, base_dir=base / "etcd", hosts=[net[e].ip for e in STORES[1:]],
                         prefixes=[net[e].prefix for e in STORES[1:]])

    def trustee_hosts(self, n: int) -> list[Host]:
        if n > MAX_TRUSTEES:
            raise ValueError(f"this network has {MAX_TRUSTEES} trustee hosts, not {n}")
        return [self.net[trustee(i)] for i in range(n)]

    def endpoint(self, member: int = 0) -> str:
        """Every member, as ``tvote up`` gives its nodes: a client fails over when its member is cut off."""
        return ",".join(self.etcd.endpoints)

    def heal_all(self) -> None:
        self.net.clear()  # no cut, loss or limit outlives its scenario
        super().heal_all()


# --- faults -------------------------------------------------------------------------------------------


def _trustees(ctx: Ctx) -> list[str]:
    return [trustee(i) for i in range(ctx.result.n)]


def split(minority: tuple[int, ...], stores_with_majority: bool = True, cut_s: float = 8.0) -> Fault:
    """The trustees in ``minority`` cut from the others (and from the stores, if ``stores_with_majority``)."""

    def fault(ctx: Ctx) -> None:
        net = ctx.env.net
        minor = [trustee(i) for i in minority]
        major = [h for h in _trustees(ctx) if h not in minor]
        ctx.wait_offered(0.3)
        if stores_with_majority:
            for i in minority:
                ctx.load.down.add(i)  # their clients hold their casts: nothing can be acknowledged there
        net.partition(minor, major + (list(STORES) if stores_with_majority else []))
        ctx.note(f"split {len(major)}|{len(minor)} for {cut_s:.0f}s, stores with the "
                 f"{'majority' if stores_with_majority else 'both sides'}")
        p0 = ctx.log_position()
        time.sleep(cut_s)
        p1 = ctx.log_position()
        ctx.note(f"{None if p0 is None else p1 - p0} events appended during the split")
        net.heal()
        ctx.revive("during the split")
        for i in minority:
            ctx.load.retry(i)
        ctx.healed()

    return fault


def cut_from_peers(node: int = 1, cut_s: float = 10.0) -> Fault:
    """One trustee cut from every other trustee, both ways; it still reaches Postgres and etcd."""
    return _apart_from_peers(node, cut_s, one_way=False)


def one_way(node: int = 1, cut_s: float = 10.0) -> Fault:
    """Nothing from one trustee reaches its peers; what they send still reaches it."""
    return _apart_from_peers(node, cut_s, one_way=True)


def _apart_from_peers(node: int, cut_s: float, one_way: bool) -> Fault:
    def fault(ctx: Ctx) -> None:
        net = ctx.env.net
        me = trustee(node)
        peers = [h for h in _trustees(ctx) if h != me]
        ctx.wait_offered(0.3)
        if one_way:
            net.cut([me], peers)
            ctx.note(f"one-way: {me} -> peers dropped {cut_s:.0f}s")
        else:
            net.partition([me], peers)
            ctx.note(f"{me} cut from its peers {cut_s:.0f}s (not from the stores)")
        time.sleep(cut_s)
        net.heal()
        ctx.revive("during the one-way cut" if one_way else "while cut from its peers")
        _retry_refused(ctx)
        ctx.healed()

    return fault


def link_loss(rate: float = 0.2) -> Fault:
    """Every trustee's link loses ``rate`` of its packets, both ways, from 20 % of the load to its end."""

    def fault(ctx: Ctx) -> None:
        net = ctx.env.net
        ctx.wait_offered(0.2)
        for h in _trustees(ctx):
            net.loss(h, rate)
        ctx.note(f"{rate:.0%} packet loss on every trustee's link (trustee-trustee path: "
                 f"{1 - (1 - rate) ** 2:.0%})")
        ctx.load.join(ctx.result.txs / ctx.result.rate + 120)
        for h in _trustees(ctx):
            net.loss(h, 0)
        ctx.revive("under packet loss")
        _retry_refused(ctx)
        ctx.healed()

    return fault


def _retry_refused(ctx: Ctx) -> None:
    """The clients cast again what a node did not acknowledge under the fault (a 503, no answer), as the
    frozen-process scenarios' clients do after SIGCONT: a vote never cast cannot settle its transaction."""
    refused = sum(len(v) for v in ctx.load.pending.values())
    if refused:
        ctx.note(f"{refused} casts unacknowledged under the fault, cast again after it")
        ctx.load.drain(lambda i: ctx.cluster.trustees[i].proc.poll() is None, 45.0)


def bandwidth(rate: str = "1mbit") -> Fault:
    """Every trustee's link capped at ``rate`` each way (``tc tbf``) from 20 % of the load to its end."""

    def fault(ctx: Ctx) -> None:
        net = ctx.env.net
        ctx.wait_offered(0.2)
        for h in _trustees(ctx):
            net.bandwidth(h, rate)
        ctx.note(f"every trustee's link capped at {rate} each way (tc tbf)")
        ctx.load.join(ctx.result.txs / ctx.result.rate + 120)
        for h in _trustees(ctx):
            net.bandwidth(h, None)
        ctx.revive("under the bandwidth cap")
        _retry_refused(ctx)
        ctx.healed()

    return fault


def etcd_leader_isolated(cut_s: float = 10.0) -> Fault:
    """The etcd leader cut from every other host (not killed); healed after ``cut_s``."""

    def fault(ctx: Ctx) -> None:
        net, etcd = ctx.env.net, ctx.env.etcd
        ctx.wait_offered(0.3)
        leader = scenarios.etcd_leader(ctx.env)
        member = next((i for i, m in enumerate(etcd.members) if m.name == leader), 0)
        host = STORES[1 + member]
        net.isolate(host)
        ctx.note(f"etcd leader {leader} ({host}) isolated {cut_s:.0f}s")
        time.sleep(cut_s)
        ctx.note(f"leader during the cut: {scenarios.etcd_leader(ctx.env)}")
        net.heal()
        wait_for(etcd.healthy, 30)
        ctx.revive("while the etcd leader was isolated")
        _retry_refused(ctx)
        ctx.healed()

    return fault


# --- the catalogue --------------------------------------------------------------------------------------


def catalogue(full: bool) -> list[tuple[str, dict[str, Any]]]:
    """(name, ``scenarios.run`` kwargs) for each network scenario; ``full`` = bench sizes, else CI sizes."""
    txs, rate = (60, 4.0) if full else (16, 4.0)
    return [
        ("net split 5|3 (N=8 t=5), stores with the 5",
         {"fault": split((5, 6, 7), True, 12.0 if full else 8.0), "n": 8, "t": 5, "txs": txs, "rate": rate}),
        ("net split 5|3 (N=8 t=5), stores on both sides",
         {"fault": split((5, 6, 7), False, 12.0 if full else 8.0), "n": 8, "t": 5, "txs": txs, "rate": rate}),
        ("net: a trustee cut from its peers, not the stores",
         {"fault": cut_from_peers(1, 12.0 if full else 8.0), "n": 5, "txs": txs, "rate": rate}),
        ("net: 20% packet loss on every trustee link",
         {"fault": link_loss(0.2), "n": 5, "txs": txs, "rate": rate}),
        ("net: one-way cut, a trustee's packets to its peers",
         {"fault": one_way(1, 12.0 if full else 8.0), "n": 5, "txs": txs, "rate": rate}),
        ("net: every trustee link capped at 1 Mbit/s (tbf)",
         {"fault": bandwidth("1mbit"), "n": 5, "txs": txs, "rate": rate}),
        ("net: etcd leader isolated (not killed)",
         {"fault": etcd_leader_isolated(12.0 if full else 8.0), "n": 5, "txs": txs, "rate": rate}),
    ]


def hosts(n: int = MAX_TRUSTEES) -> list[str]:
    return ["op", *STORES, *(trustee(i) for i in range(n))]


def run_all(full: bool, only: list[str], base: Path, say: Callable[[str], None] = print,
            points: list[tuple[int, float, int]] = ()) -> list[dict[str, Any]]:
    """Build the network, enter ``op``, run the chosen scenarios with a chain each; one dict per scenario.
    ``points``: load points (N, rate, txs) on the same network first (``LOAD`` lines)."""
    from chaos.loadpoint import run_point

    todo = [(name, kw) for name, kw in catalogue(full) if not only or any(o.lower() in name.lower() for o in only)]
    out: list[dict[str, Any]] = []
    size = max([kw.get("n", 5) for _, kw in todo] + [p[0] for p in points] + [1])
    with TestNetwork(hosts(size)) as net, net["op"].enter():
        env = NetChaosEnv(net, base).start()
        for n, rate, txs in points:
            say("LOAD " + json.dumps({"network": "netns", **run_point(env, n, rate, txs)}))
        rig = SubmitterRig(base / "chain").start_chain()  # anvil on op's loopback, the submitter in op
        try:
            for name, kw in todo:
                say(f"== {name}")
                rig.client = rig.client.deploy(rig.client.w3, _owner(rig), [_submitter(rig)],
                                               chain_id=rig.anvil.chain_id)  # a fresh contract: its own records

                def start(ctx: Ctx) -> SubmitterRig:
                    rig.launch(ctx.cluster, ctx.scope.app_dsn, env.endpoint().replace("http://", ""), ctx.scope.prefix)
                    return rig

                kw = {**kw, "fault": _supervised(kw["fault"], rig, start)}
                res = scenarios.run(env, name, chain=rig.client, submitter=start, settle_timeout=120, **kw)
                out.append(_figures(res, rig))
                say("RESULT " + json.dumps(out[-1]))
        finally:
            rig.close()
            env.close()
    return out


def _supervised(fault: Fault, rig: SubmitterRig, start: Callable[[Ctx], Any]) -> Fault:
    """After the fault, a submitter that exited is started again (as its supervisor would), with a note."""

    def run(ctx: Ctx) -> None:
        fault(ctx)
        p = rig.procs[-1]
        if p.poll() is not None:
            log = rig.base / f"submitter-{len(rig.procs) - 1}.log"
            last = (log.read_text(errors="replace").strip().splitlines() or ["?"])[-1] if log.exists() else "?"
            ctx.note(f"the submitter exited during the fault ({p.returncode}: {last[:160]}); restarted")
            start(ctx)

    return run


def _owner(rig: SubmitterRig) -> Any:
    from eth_account import Account

    return Account.from_key(rig.anvil.private_key(0))


def _submitter(rig: SubmitterRig) -> str:
    from eth_account import Account

    return Account.from_key(rig.anvil.private_key(1)).address


def _figures(res: scenarios.Result, rig: SubmitterRig) -> dict[str, Any]:
    confirmed = (res.report.statuses if res.report else {}).get("CONFIRMED", 0)
    try:
        writes = len(rig.client.recorded_events())
    except Exception as e:  # the chain is unreachable: the row says so
        writes = f"error: {type(e).__name__}"
    failed = [f"{c.name}: {'; '.join(c.problems[:2])}" for c in res.report.failed] if res.report else []
    return {**res.row(), "held_bool": res.held, "votes_lost_n": res.votes_lost, "txs_lost_n": res.txs_lost,
            "recovery": res.recovery_s, "confirmed": confirmed, "chain_writes": writes,
            "writes_per_consensus": round(writes / confirmed, 3) if confirmed and isinstance(writes, int) else None,
            "exited": res.exited, "failed": failed, "error": res.error}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m chaos.netchaos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="bench sizes (60 txs at 4/s), else CI sizes")
    ap.add_argument("--only", nargs="*", default=[], help="scenarios whose name contains one of these")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-scenarios", action="store_true", help="only the load points")
    ap.add_argument("--keep", type=Path, help="keep the chain's and the submitters' logs here")
    ap.add_argument("--load", nargs=3, action="append", default=[], metavar=("N", "RATE", "TXS"),
                    help="a load point on the network first (chaos.loadpoint; repeatable)")
    args = ap.parse_args(argv)
    if args.list:
        for name, _ in catalogue(args.full):
            print(name)
        return 0
    with tempfile.TemporaryDirectory(prefix="netchaos-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o711)  # the postgres user reaches its data dir below
        points = [(int(n), float(r), int(k)) for n, r, k in args.load]
        rows = run_all(args.full, ["(none)"] if args.no_scenarios else args.only, base,
                       lambda s: print(s, flush=True), points)
    return 0 if all(r["held_bool"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
