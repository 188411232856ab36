"""Trustee nodes end to end: N real node processes on loopback, votes cast through their APIs.

Prints, per N and offered rate: vote ingest (cluster and per node), gossip messages against
votes (the batching gain), reception at the edge (signed -> accepted by a receiver's validator,
seed 11.1), reception in the log (signed -> recorded) and end-to-end latency (first vote signed ->
ThresholdReached recorded) p50/p99, the recorders' contention, and gossip drops. Asserts nothing.
Run: ``.venv/bin/python bench/node_bench.py [--nodes 4 7 10] [--txs 200] [--rates 20 50]``;
``--open`` paces requests without waiting for answers, ``--bulk K`` casts K ballots per request,
``--flood`` repeats each point with a member flooding garbage, ``--node-arg`` passes node options.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src")]

import psycopg  # noqa: E402

from devstack.etcd import Etcd  # noqa: E402
from devstack.postgres import Postgres  # noqa: E402
from devstack.trustees import TrusteeCluster  # noqa: E402
from tvote import db  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def one_run(pg: Postgres, etcd: Etcd, n: int, txs: int, rate: float, flood: bool = False, bulk: int = 1,
            node_args: list[str] | None = None, open_loop: bool = False) -> dict:
    name = f"n{n}_r{int(rate)}_{int(time.time())}"
    pg.create_database(name)
    db.upgrade(pg.url(name))
    dsn = pg.dsn(name, user=db.APP_ROLE)
    t = math.ceil(2 * n / 3)
    # With --flood one extra member floods the topic with garbage; it never votes, so honest
    # throughput with and without it can be compared (rate limiting per author, peer scoring).
    size = n + 1 if flood else n
    cluster = TrusteeCluster(size, t, dsn, etcd.endpoints[0], f"/bench/{name}", deadline_ms=120_000,
                             byzantine={n: "flood"} if flood else None)
    for tr in cluster.trustees:
        tr.extra_args = list(node_args or [])
    cluster.start()
    try:
        t0 = time.monotonic()
        refused = 0
        if bulk == 1 and not open_loop:  # closed loop: each transaction's N casts return before the next is offered
            pool = ThreadPoolExecutor(n)
            for k in range(txs):
                list(pool.map(lambda i, k=k: cluster.cast(i, f"tx_{k}", k), range(n)))  # the flooder never votes
                sleep = t0 + (k + 1) / rate - time.monotonic()
                if sleep > 0:
                    time.sleep(sleep)
        else:  # open loop: every node gets one request of `bulk` ballots per round, rounds paced at rate/bulk
            pool = ThreadPoolExecutor(n * 32)
            futures = []
            for r in range(math.ceil(txs / bulk)):
                ballots = [(f"tx_{k}", k) for k in range(r * bulk, min(txs, (r + 1) * bulk))]
                if bulk == 1:
                    futures += [pool.submit(cluster.cast, i, *ballots[0]) for i in range(n)]
                else:
                    futures += [pool.submit(cluster.cast_many, i, ballots) for i in range(n)]
                sleep = t0 + (r + 1) * bulk / rate - time.monotonic()
                if sleep > 0:
                    time.sleep(sleep)
            refused = sum(1 for f in futures if f.result()[0] != 202)
        offered_s = time.monotonic() - t0
        deadline = time.monotonic() + 120
        with psycopg.connect(dsn, autocommit=True) as c:
            while time.monotonic() < deadline:
                done = c.execute("SELECT count(*) FROM events WHERE event_type = 'ThresholdReached'").fetchone()[0]
                if done >= txs:
                    break
                time.sleep(0.2)
            rows = c.execute(
                "SELECT event_type, payload, (extract(epoch FROM recorded_at) * 1000)::bigint FROM events "
                "WHERE event_type IN ('VoteAccepted', 'ThresholdReached') ORDER BY position").fetchall()
        counters = [cluster.counters(i) for i in range(n)]
        flooder = cluster.counters(n) if flood else {}
        edge = [c for c in counters[:n] if c.get("reception_edge_samples")]
        reception_edge = {"reception_edge_p50_ms": round(sum(c["reception_edge_p50_ms"] for c in edge) / len(edge), 1),
                          "reception_edge_p99_ms_worst_node": max(c["reception_edge_p99_ms"] for c in edge)} \
            if edge else {}
        recorder = {k: sum(c.get(f"recorder_{k}", 0) for c in counters)
                    for k in ("conflicts", "etcd_refusals", "deferred", "heads_repaired")}
        flood_dropped = sum(c.get("dropped_garbage", 0) + c.get("gossip_rejected_rate", 0) for c in counters)
    finally:
        cluster.destroy()
    first_vote: dict[str, int] = {}
    reception, e2e, times = [], [], []
    for etype, p, at in rows:
        if etype == "VoteAccepted":
            ts = p["vote"]["timestamp_ms"]
            first_vote[p["tx_id"]] = min(first_vote.get(p["tx_id"], ts), ts)
            reception.append(at - ts)
            times.append(at)
        else:
            e2e.append(at - first_vote[p["tx_id"]])
    votes = len(reception)
    span = (max(times) - min(times)) / 1000 if times else float("nan")
    msgs = sum(c.get("gossip_published", 0) for c in counters) or sum(1 for _ in counters)
    published_votes = sum(c.get("published_votes", 0) for c in counters)
    drops = sum(v for c in counters for k, v in c.items() if k.startswith("gossip_") and "drop" in k)
    return {
        "N": n, "t": t, "flood": flood, "bulk": bulk, "offered_tx_per_s": rate, "txs": txs, "consensus": len(e2e),
        "offered_s": round(offered_s, 1), "votes_recorded": votes,
        "cluster_votes_per_s": round(votes / span) if span else None,
        "node_ingest_votes_per_s": round(votes / span) if span else None,  # every node follows every vote
        "gossip_msgs": msgs, "votes_per_gossip_msg": round(published_votes / msgs, 1) if msgs else None,
        "reception_p50_ms": pct(reception, 0.5), "reception_p99_ms": pct(reception, 0.99),
        "e2e_p50_ms": pct(e2e, 0.5), "e2e_p99_ms": pct(e2e, 0.99), "gossip_drops": drops,
        "flood_dropped_at_edge": flood_dropped if flood else 0, "refused_requests": refused,
        **({"flood_sent": flooder.get("flood_sent", 0), "flood_published": flooder.get("gossip_published", 0),
            "flood_rejected_by_validators": sum(c.get("gossip_rejected_invalid", 0) for c in counters),
            "flood_rejected_by_rate_limit": sum(c.get("gossip_rejected_rate", 0) for c in counters)} if flood else {}),
        "recorder": recorder, **reception_edge,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, nargs="+", default=[4, 7, 10])
    ap.add_argument("--txs", type=int, default=200)
    ap.add_argument("--rates", type=float, nargs="+", default=[20.0])
    ap.add_argument("--flood", action="store_true", help="also run each point with a garbage-flooding member")
    ap.add_argument("--bulk", type=int, default=1,
                    help="ballots per API request (open loop); 1 = one closed-loop request per vote")
    ap.add_argument("--open", action="store_true", help="open loop even with --bulk 1 (paced, not waiting)")
    ap.add_argument("--node-arg", action="append", default=[], help="extra `tvote node` option (repeatable)")
    args = ap.parse_args()
    with Postgres(fsync=True) as pg, Etcd(size=1) as etcd:
        for n in args.nodes:
            for rate in args.rates:
                print(one_run(pg, etcd, n, args.txs, rate, bulk=args.bulk, node_args=args.node_arg,
                              open_loop=args.open), flush=True)
                if args.flood:
                    print(one_run(pg, etcd, n, args.txs, rate, flood=True, bulk=args.bulk,
                                          node_args=args.node_arg, open_loop=args.open), flush=True)


if __name__ == "__main__":
    main()
