"""Idle CPU of a trustee cluster: N nodes connected and ready, nothing offered (issues 14 and 15).

What a cluster costs at rest is paid for months, and it is part of every load point's CPU per consensus
(at N=10 and 5 tx/s, 1 % of a core per node is 20 ms per consensus). Starts the cluster as the load points
do (``chaos.harness``: Postgres, 3 etcd members, N ``tvote node`` processes), waits for the warm-up, then
reads each node's CPU time over the window. ``--base-src DIR`` measures another checkout's node code the
same way, right after, for an A/B in one run. Prints one JSON line per run; asserts nothing.

    .venv/bin/python bench/idle_bench.py --nodes 10 --seconds 30 [--base-src /tmp/base/src] [--profile F]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import psutil

from chaos.harness import ChaosEnv, default_threshold
from chaos.loadpoint import node_src
from devstack.trustees import TrusteeCluster


def idle_point(env: ChaosEnv, n: int, seconds: float, warmup: float, src: Path | None,
               profile: Path | None) -> dict:
    scope = env.scope()
    cluster = TrusteeCluster(n, default_threshold(n), scope.app_dsn, env.endpoint(0), scope.prefix,
                             deadline_ms=600_000, die_with_parent=True, hosts=env.trustee_hosts(n))
    with node_src(src):
        cluster.start()
    try:
        time.sleep(warmup)
        procs = [psutil.Process(tr.proc.pid) for tr in cluster.trustees]
        spy = None
        if profile is not None:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-g", "-f", "raw", "-r",
                                    "100", "--nonblocking", "-d", str(int(seconds)), "-p",
                                    str(cluster.trustees[0].proc.pid), "-o", str(profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = [sum(p.cpu_times()[:2]) for p in procs]
        t0 = time.monotonic()
        time.sleep(seconds)
        after = [sum(p.cpu_times()[:2]) for p in procs]
        wall = time.monotonic() - t0
        if spy is not None:
            spy.wait(seconds + 30)
    finally:
        cluster.destroy()
    per_node = [round(100 * (b - a) / wall, 2) for a, b in zip(before, after, strict=True)]
    return {"nodes": n, "seconds": round(wall, 1), "node_cpu_pct": per_node,
            "cluster_cpu_pct": round(sum(per_node), 1), "load_avg_1m": round(psutil.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=15.0, help="after start, before measuring (connections, mesh)")
    ap.add_argument("--base-src", type=Path, default=None, help="also measure the node code here, right after")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy the first node of this checkout's run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp, ChaosEnv(Path(tmp)) as env:
        runs = [("this", None, args.profile)] + ([("base", args.base_src, None)] if args.base_src else [])
        for code, src, profile in runs:
            print(json.dumps({"code": code, **idle_point(env, args.nodes, args.seconds, args.warmup, src, profile)}),
                  flush=True)


if __name__ == "__main__":
    main()
