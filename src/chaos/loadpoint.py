"""One load point (seed 14.3 scaled to 2 cores): N node processes at an offered rate, with CPU and RSS per process.

Why beside the chaos suite: the same harness (``Load``) offers the transactions, and each point is
checked by the same invariants, so a load point that "goes fast" by losing votes cannot pass.
Per-stage latency comes from the log: the API round trip (client), reception (vote signed ->
``VoteAccepted`` recorded) and end to end (first vote signed -> ``ThresholdReached`` recorded); and
from the nodes, seed 11.1's vote reception (signed -> accepted at a receiver's gossip edge, before
any recording: ``reception_edge_*``).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nacl.signing
import psutil
import psycopg

from chaos import invariants
from chaos.harness import ChaosEnv, Load, ProcSampler, default_threshold, honest, views, wait_converged
from devstack import trustees as trustees_mod
from devstack.trustees import TrusteeCluster
from events import rules
from events.vote import Vote, sign

# What the issue-15 report prints per point (``bench/chaos_bench.py --json``), in this order.
REPORT_KEYS = ("nodes", "threshold", "offered_tx_per_s", "completed_tx_per_s", "e2e_p50_ms", "e2e_p99_ms",
               "reception_p99_ms", "trustee_cpu_s", "cpu_ms_per_consensus", "floor_cpu_ms_per_consensus",
               "node_rss_mb_max", "votes_lost")
# ... and after them, seed 11.1 reception at the edges and how the transport carried the votes (None for node
# code that does not count them).
TAKE_OVERS = ("standby_taken_over_own", "standby_taken_over_silent", "standby_taken_over_patience")
TRANSPORT_KEYS = ("reception_edge_p50_ms", "reception_edge_p99_ms", "open_loop", "votes_per_msg",
                  "copies_per_delivery", "gossip_drops", "standby_taken_over",
                  *TAKE_OVERS, "record_batch_mean", "record_ms_mean", "etcd_refusals", "pg_conflicts", "deferred",
                  "record_s", "recorder_phase_s")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 1) if xs else float("nan")


def server_pids(env: ChaosEnv) -> dict[str, int]:
    """Postgres postmaster (its backends are counted as children) and each etcd member."""
    pids = {}
    pidfile = env.pg.data_dir / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        pids["postgres"] = int(pidfile.read_text().split()[0])
    for m in env.etcd.members:
        if m.proc and m.proc.poll() is None:
            pids[m.name] = m.proc.pid
    return pids


def verify_cost_ms(samples: int = 2000) -> float:
    """CPU ms of one Ed25519 vote verification here, now (PyNaCl, distinct votes, no memo): the floor's unit."""
    key = nacl.signing.SigningKey.generate()
    vk = nacl.signing.VerifyKey(bytes(key.verify_key))
    votes = [sign(Vote(f"floor_{i}", i, "n1", 1_700_000_000_000 + i), key) for i in range(samples)]
    t0 = time.process_time()
    for sv in votes:
        vk.verify(sv.vote.signing_bytes(), sv.signature)
    return (time.process_time() - t0) * 1000 / samples


@contextlib.contextmanager
def node_src(src: Path | None):
    """Run the trustee processes on the node code under ``src`` (an A/B against another checkout)."""
    if src is None:
        yield
        return
    old = trustees_mod.SRC
    trustees_mod.SRC = Path(src)
    try:
        yield
    finally:
        trustees_mod.SRC = old


def run_point(env: ChaosEnv, n: int, rate: float, txs: int, settle_timeout: float = 120,
              src: Path | None = None, profile: Path | None = None, node_args: list[str] | None = None,
              open_loop: bool = False) -> dict[str, Any]:
    """One point. ``src``: the node code to run (default: this checkout's); ``profile``: a py-spy
    record of the first trustee over the load (collapsed stacks, written to that file); ``open_loop``:
    offer at the rate without waiting for answers (``Load``)."""
    t = default_threshold(n)
    scope = env.scope()
    cluster = TrusteeCluster(n, t, scope.app_dsn, env.endpoint(0), scope.prefix, deadline_ms=600_000,
                             die_with_parent=True,  # started from the main thread: no orphans
                             hosts=env.trustee_hosts(n))  # loopback, or a host each (chaos.netchaos)
    for tr in cluster.trustees:
        tr.extra_args = list(node_args or [])
    with node_src(src):
        cluster.start()
    load = Load(cluster, rate, open_loop=open_loop)
    spy = None
    try:
        pids = {tr.node_id: tr.proc.pid for tr in cluster.trustees} | server_pids(env)
        if profile is not None:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-g", "-f", "raw",
                                    "-r", "100", "--nonblocking", "-p", str(cluster.trustees[0].proc.pid),
                                    "-o", str(profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sampler = ProcSampler(pids).start()
        t0 = time.monotonic()
        load.run(txs)
        offered_s = time.monotonic() - t0
        load.close()  # every cast answered (open loop: they were still in flight)
        settled = wait_converged(cluster, honest(cluster), load.tx_ids, {rules.THRESHOLD_REACHED}, settle_timeout)
        wall = sampler.stop()
        node_views = views(cluster, honest(cluster), load.tx_ids)
        counters = [cluster.counters(i) for i in range(n)]
    finally:
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(20)
        load.close()
        cluster.destroy()
    with psycopg.connect(scope.app_dsn) as c:
        rows = c.execute(
            "SELECT event_type, payload, (extract(epoch FROM recorded_at) * 1000)::bigint FROM events "
            "WHERE event_type IN ('VoteAccepted', 'ThresholdReached') ORDER BY position").fetchall()
    first: dict[str, int] = {}
    reception, e2e, recorded = [], [], []
    for etype, p, at in rows:
        if etype == "VoteAccepted":
            ts = p["vote"]["timestamp_ms"]
            first[p["tx_id"]] = min(first.get(p["tx_id"], ts), ts)
            reception.append(at - ts)
        else:
            e2e.append(at - first[p["tx_id"]])
            recorded.append(at)
    span = (max(recorded) - min(first.values())) / 1000 if recorded else float("nan")
    rep = invariants.check(scope.app_dsn, None, views=node_views, acked=load.acks, offered=load.tx_ids)
    nodes = [tr.node_id for tr in cluster.trustees]
    cpu = {k: round(100 * v / wall, 1) for k, v in sampler.cpu.items()}
    rss = {k: round(v / 2**20) for k, v in sampler.rss_peak.items()}
    trustee_cpu_s = sum(sampler.cpu.get(x, 0.0) for x in nodes)
    total = {k: sum(c.get(k, 0) for c in counters) for k in ("gossip_copies_in", "gossip_delivered", "gossip_published",
                                                              "gossip_direct_published", "gossip_drops",
                                                              "published_votes", "standby_taken_over", *TAKE_OVERS,
                                                              "record_batches", "record_commands", "record_us",
                                                              "recorder_etcd_refusals", "recorder_conflicts",
                                                              "recorder_deferred")}
    phases = ("follow", "ensure", "decide", "claim", "resolve", "append", "undo")
    rec_s = {k: round(sum(c.get(f"recorder_us_{k}", 0) for c in counters) / 1e6, 2) for k in phases}
    for k in ("lock_wait", "locked"):  # the log lock: waiting for it, and holding it (to the commit's end)
        rec_s[k] = round(sum(c.get(f"recorder_store_us_{k}", 0) for c in counters) / 1e6, 2)
    verify_ms = verify_cost_ms()
    edge = [c for c in counters if c.get("reception_edge_samples")]  # node.service.reception_summary
    return {
        # issue 15's figures: trustee CPU seconds over the point (load start -> settled) per consensus,
        # beside the floor (every node checks every vote once: N x N verifies per consensus)
        "nodes": n, "threshold": t, "trustee_cpu_s": round(trustee_cpu_s, 2),
        "cpu_ms_per_consensus": round(1000 * trustee_cpu_s / len(e2e), 1) if e2e else None,
        "floor_cpu_ms_per_consensus": round(n * n * verify_ms, 2), "verify_us": round(1000 * verify_ms, 1),
        "node_rss_mb_max": max(rss.get(x, 0) for x in nodes),
        # the transport: gossip messages sent, votes per message, copies received per delivered message
        "gossip_msgs": total["gossip_published"], "gossip_direct_msgs": total["gossip_direct_published"],
        "votes_per_msg": round(total["published_votes"] / total["gossip_published"], 2)
        if total["gossip_published"] else None,
        "copies_per_delivery": round(total["gossip_copies_in"] / total["gossip_delivered"], 2)
        if total["gossip_delivered"] and total["gossip_copies_in"] else None,
        "gossip_drops": total["gossip_drops"], "standby_taken_over": total["standby_taken_over"],
        **{k: total[k] for k in TAKE_OVERS},  # why: our own vote after a grace, the members ahead silent, patience
        # the write path: commands per Recorder.execute, its mean time, and how often the guard or the log refused
        "record_batch_mean": round(total["record_commands"] / total["record_batches"], 2)
        if total["record_batches"] else None,
        "record_ms_mean": round(total["record_us"] / total["record_batches"] / 1000, 2)
        if total["record_batches"] else None,
        "etcd_refusals": total["recorder_etcd_refusals"], "pg_conflicts": total["recorder_conflicts"],
        "deferred": total["recorder_deferred"],
        # seconds all nodes spent in each phase of the write path ("follow": every catch-up read and fold)
        "record_s": round(total["record_us"] / 1e6, 2), "recorder_phase_s": rec_s,
        "N": n, "t": t, "open_loop": open_loop, "offered_tx_per_s": rate, "txs": txs, "offered_s": round(offered_s, 1),
        "completed": len(e2e), "completed_tx_per_s": round(len(e2e) / span, 1) if span else None,
        "settled": settled is not None, "votes": len(reception),
        "node_ingest_votes_per_s": round(len(reception) / span, 1) if span else None,
        "api_p50_ms": pct([x * 1000 for x in load.cast_latency], 0.5),
        "api_p99_ms": pct([x * 1000 for x in load.cast_latency], 0.99),
        "reception_p50_ms": pct(reception, 0.5), "reception_p99_ms": pct(reception, 0.99),
        # seed 11.1 at the receivers' edges: the nodes' median p50, and the worst node's p99
        "reception_edge_p50_ms": sorted(c["reception_edge_p50_ms"] for c in edge)[len(edge) // 2] if edge else None,
        "reception_edge_p99_ms": max(c["reception_edge_p99_ms"] for c in edge) if edge else None,
        "e2e_p50_ms": pct(e2e, 0.5), "e2e_p99_ms": pct(e2e, 0.99),
        "node_cpu_pct_mean": round(sum(cpu.get(x, 0) for x in nodes) / n, 1),
        "node_cpu_pct_max": max(cpu.get(x, 0) for x in nodes),
        "node_rss_mb_mean": round(sum(rss.get(x, 0) for x in nodes) / n),
        "postgres_cpu_pct": cpu.get("postgres"), "postgres_rss_mb": rss.get("postgres"),
        "etcd_cpu_pct": round(sum(v for k, v in cpu.items() if k.startswith("etcd")), 1),
        "etcd_rss_mb": sum(v for k, v in rss.items() if k.startswith("etcd")),
        "invariants_held": rep.ok, "votes_lost": rep.votes_lost, "txs_lost": rep.txs_lost,
        "host_cpu_count": psutil.cpu_count(),
    }
