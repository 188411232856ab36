"""The scale model (``chaos.scalemodel``): calibrate it here, check it against the real load points, predict 14.3.

Why: the seed's 50- and 100-node scenarios do not fit 2 cores as processes, so they are predicted by a model built
from per-stage costs measured on this machine with the project's own code, after the model has been compared with
the load points that did run (bench/scale_points.jsonl). Prints tables; asserts nothing.

    .venv/bin/python bench/scale_model.py --calibrate      # ~2 min: writes bench/calibration.json
    .venv/bin/python bench/scale_model.py --check          # predicted vs measured (bench/scale_points.jsonl)
    .venv/bin/python bench/scale_model.py --check --run-real 4:10:100 10:10:100 --open-loop   # fresh points first
    .venv/bin/python bench/scale_model.py --predict        # the 14.3 scenarios on three deployments

What --calibrate measures (each a short microbenchmark; machine load is recorded beside the figures):
pure core in-process (Ed25519 verify via ``events.vote``, ``wire.decode``, decide per vote at several N, fold per
event via ``Recorder.catch_up``); against a private Postgres (fsync on) and a 3-member etcd, as the chaos load points
use: catch-up query, etcd claim (granted and refused), append, ``Recorder.execute`` at batch 1 and 50, server CPU per
operation, concurrent capacity; a local HTTP round trip like ``POST /votes``; and four gossip hosts as processes
(``bench/gossip_bench.py``'s harness), once as a GossipSub mesh and once admitting one another (committee delivery,
as the node's aimed votes travel): transport CPU per message copy, one-hop latency, idle CPU per host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT / "src"), str(BENCH)]

import nacl.signing  # noqa: E402
import psutil  # noqa: E402

from chaos.scalemodel import Calibration, Deployment, Gossip, Prediction, Scenario, max_rate, predict  # noqa: E402
from events import rules  # noqa: E402
from events.identity import peer_id_of  # noqa: E402
from events.model import CLUSTER_STREAM, tx_stream  # noqa: E402
from events.vote import SignedVote, Vote, sign  # noqa: E402
from events.writers import RowSigner, operator_writer  # noqa: E402

CAL_FILE = BENCH / "calibration.json"
POINTS = BENCH / "scale_points.jsonl"
SHARED_BOX = Deployment("this box: all processes on 2 cores", shared_cores=2)
DEPLOYMENTS = [Deployment("1 node per 1-core machine", cores_per_node=1),
               Deployment("1 node per 8-core machine", cores_per_node=8), SHARED_BOX]
SCENARIOS_14_3 = [("Baseline", 10, 7, 100.0), ("Burst", 50, 34, 1000.0), ("Scale", 100, 67, 500.0),
                  ("Sustained", 10, 7, 50.0)]


def load_avg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {psutil.cpu_count()} cores"


# ------------------------------------------------------------------------------ trustees and votes


class Member:
    def __init__(self, i: int) -> None:
        self.node_id = f"node-{i}"
        self.key = nacl.signing.SigningKey(bytes([i % 251 + 1]) * 31 + bytes([i // 251]))
        self.peer_id = peer_id_of(bytes(self.key.verify_key))
        self.signer = RowSigner(self.node_id, self.key)  # how its node signs the log (R13)

    def vote(self, tx_id: str, value: int = 42) -> SignedVote:
        return sign(Vote(tx_id, value, self.node_id, 1), self.key)

    def receive(self, tx_id: str, value: int = 42) -> rules.ReceiveVote:
        return rules.ReceiveVote(self.vote(tx_id, value), self.peer_id, 1000)


CAL_OP = RowSigner(operator_writer("cal"), nacl.signing.SigningKey(b"\x0c" * 32))


def boot(n: int) -> tuple[list[Member], list[rules.Command]]:
    """Members and the operator commands that found their cluster (run them as ``CAL_OP``)."""
    ms = [Member(i) for i in range(1, n + 1)]
    cmds: list[rules.Command] = [rules.AdmitWriter(CAL_OP.writer, "operator", CAL_OP.public_key, "cal")]
    cmds += [rules.AdmitMember(m.node_id, bytes(m.key.verify_key), m.peer_id, "cal") for m in ms]
    return ms, [*cmds, rules.Configure(math.ceil(2 * n / 3), "cal", deadline_ms=600_000)]


def vote_cmds(ms: list[Member], txs: int, tag: str) -> list[rules.ReceiveVote]:
    """Every member's vote on each transaction, in transaction order (as a node receives them)."""
    return [m.receive(f"{tag}_{k}", k) for k in range(txs) for m in ms]


def per_op(fn: Callable[[], Any], count: int, clock: Callable[[], float] = time.process_time) -> float:
    t0 = clock()
    for _ in range(count):
        fn()
    return (clock() - t0) / count


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    mx, my = statistics.mean(xs), statistics.mean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


# ------------------------------------------------------------------------------ calibration: the pure core


def cal_core(out: dict[str, float], notes: dict[str, str]) -> None:
    from events.memory_store import MemoryStore
    from node import wire
    from recording.memory_guard import MemoryGuard, MemoryKeys
    from recording.recorder import Recorder

    ms = [Member(i) for i in range(1, 11)]
    fresh = [ms[k % 10].vote(f"verify_{k}") for k in range(3000)]
    keys = {m.node_id: bytes(m.key.verify_key) for m in ms}
    it = iter(fresh)
    out["vote_verify_cpu_s"] = per_op(lambda: (sv := next(it)).verifies_under(keys[sv.vote.node_id]), 3000)
    payloads = [wire.encode([sv]) for sv in fresh[:2000]]
    it2 = iter(payloads)
    out["vote_edge_cpu_s"] = per_op(lambda: wire.decode(next(it2)), 2000)  # the validator; the pump reuses it
    notes["vote_edge_cpu_s"] = "wire.decode of a one-vote batch (the validator parses, the pump reuses the parse)"

    sizes, decide, fold = [4, 10, 40, 100], [], []
    for n in sizes:
        members, cmds = boot(n)
        txs = max(8, 2000 // n)
        votes = vote_cmds(members, txs, f"d{n}")
        for c in votes:  # verified once beforehand: the decider's check is a cache hit, as in the node
            c.vote.verifies_under(bytes(members[int(c.vote.vote.node_id[5:]) - 1].key.verify_key))
        ledger = rules.Ledger()
        for c in cmds:
            ledger.execute(c)
        t0 = time.process_time()
        for c in votes:
            ledger.execute(c)
        decide.append((time.process_time() - t0) / len(votes))
        store = MemoryStore()
        keys = MemoryKeys()
        Recorder(store, MemoryGuard("op", keys), CAL_OP).execute(cmds)
        rec = Recorder(store, MemoryGuard("cal", keys), members[0].signer)
        for i in range(0, len(votes), 500):
            rec.execute(list(votes[i:i + 500]))
        follower = Recorder(store, MemoryGuard("follower"), members[1].signer)
        t0 = time.process_time()
        events = follower.catch_up()
        fold.append((time.process_time() - t0) / events)
    out["decide_cpu_s"], out["decide_per_member_cpu_s"] = (max(0.0, v) for v in fit(sizes, decide))
    a, b = fit(sizes, fold)
    out["_memory_fold_cpu_s"], out["follow_per_member_cpu_s"] = max(0.0, a), max(0.0, b)
    notes["decide"] = "rules.Ledger.execute per vote at N=" + "/".join(map(str, sizes)) + ": " + \
        ", ".join(f"{x * 1e6:.0f}" for x in decide) + " us (linear fit in N)"
    notes["fold_memory"] = "Recorder.catch_up over a MemoryStore log at the same N: " + \
        ", ".join(f"{x * 1e6:.1f}" for x in fold) + " us/event"


# ------------------------------------------------------------------------------ calibration: Postgres and etcd


def server_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            for q in [p, *p.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = q.cpu_times()
                    total += t.user + t.system
    return total


def measure(fn: Callable[[], Any], count: int, pids: list[int]) -> tuple[float, float, float]:
    """(wall, client CPU, server CPU) per call."""
    s0, c0, w0 = server_cpu(pids), time.process_time(), time.perf_counter()
    for _ in range(count):
        fn()
    w, c, s = time.perf_counter() - w0, time.process_time() - c0, server_cpu(pids) - s0
    return w / count, c / count, s / count


def concurrent_rate(make: Callable[[], Callable[[], Any]], threads: int, seconds: float) -> float:
    """Operations/s with ``threads`` clients, each its own connection, for ``seconds``."""
    ops = [0] * threads
    stop = threading.Event()
    workers = [make() for _ in range(threads)]

    def run(i: int) -> None:
        while not stop.is_set():
            workers[i]()
            ops[i] += 1

    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join(10)
    return sum(ops) / (time.perf_counter() - t0)


def cal_servers(out: dict[str, float], notes: dict[str, str]) -> None:
    from chaos.harness import ChaosEnv
    from events.postgres_store import PostgresStore
    from events.store import Unit
    from recording.etcd_guard import EtcdGuard
    from recording.guard import Claim
    from recording.memory_guard import MemoryGuard
    from recording.recorder import Recorder

    with tempfile.TemporaryDirectory(prefix="scale-cal-") as tmp, ChaosEnv(Path(tmp)) as env:
        scope = env.scope()
        pg_pid = int((env.pg.data_dir / "postmaster.pid").read_text().split()[0])
        etcd_pids = [m.proc.pid for m in env.etcd.members if m.proc]
        members, cmds = boot(10)
        store = PostgresStore(scope.app_dsn)
        guard = EtcdGuard(env.endpoint(0), scope.prefix, "cal-1")
        Recorder(store, guard, CAL_OP).execute(cmds)
        rec = Recorder(store, guard, members[0].signer)
        last = store.last_position()

        time.sleep(0.5)
        s0, t0 = server_cpu(etcd_pids), time.perf_counter()
        time.sleep(2.0)
        out["etcd_idle_cores"] = (server_cpu(etcd_pids) - s0) / (time.perf_counter() - t0)

        w, c, s = measure(lambda: store.read_all(after=last, limit=5000), 1000, [pg_pid])
        out["query_latency_s"], out["query_cpu_s"], out["pg_cpu_per_query_s"] = w, c, s

        k = iter(range(10**9))

        def granted() -> None:
            i = next(k)
            counters = {f"vote_counts/c_{i}/42": "1", f"transaction_status/c_{i}": "x"}
            claim = Claim({f"cal:{i}": 0, tx_stream(f"c_{i}"): 0}, {tx_stream(f"c_{i}"): 2},
                          {f"c_{i}/node-1": '{"v":1}'}, counters)
            assert guard.claim([claim]) is None

        w, c, s = measure(granted, 300, etcd_pids)
        out["etcd_txn_latency_s"], out["_etcd_client_cpu_s"], out["etcd_cpu_per_txn_s"] = w, c, s

        def refused() -> None:  # a stale head: etcd refuses, the recorder asks PG and catches up
            claim = Claim({tx_stream("c_0"): 0}, {tx_stream("c_0"): 1}, {"c_0/node-2": "{}"}, {})
            assert guard.claim([claim]) is not None
            store.stream_versions([tx_stream("c_0")])
            store.read_all(after=last, limit=5000)

        _, out["_refusal_client_cpu_s"], _ = measure(refused, 200, etcd_pids)

        lock = threading.Lock()

        def make_claimer() -> Callable[[], None]:
            g = EtcdGuard(env.endpoint(0), scope.prefix, f"cal-{next(k)}")

            def one() -> None:
                with lock:
                    i = next(k)
                g.claim([Claim({tx_stream(f"p_{i}"): 0}, {tx_stream(f"p_{i}"): 1}, {f"p_{i}/node-1": "{}"}, {})])
            return one

        out["etcd_capacity_txn_per_s"] = concurrent_rate(make_claimer, 8, 2.5)
        notes["etcd_capacity_txn_per_s"] = "8 Python client threads on this box for 2.5 s (a lower bound)"

        # appends: units decided by the real rules, one VoteAccepted each (TransactionOpened with the first)
        ledger = rules.Ledger()
        for cmd in cmds:
            ledger.execute(cmd)
        cluster_v = store.stream_versions([CLUSTER_STREAM])[CLUSTER_STREAM]
        units = [Unit.of({CLUSTER_STREAM: cluster_v, tx_stream(f"a_{i}"): 0},
                         ledger.execute(members[0].receive(f"a_{i}"))) for i in range(4000)]  # list.pop: thread-safe
        w, c, s = measure(lambda: store.append([units.pop()], members[0].signer), 300, [pg_pid])
        out["pg_append_latency_s"], out["_append_client_cpu_s"], out["pg_cpu_per_append_s"] = w, c, s
        _, c50, s50 = measure(lambda: store.append([units.pop() for _ in range(50)], members[0].signer), 20, [pg_pid])
        out["_append_vote_client_cpu_s"] = max(0.0, (c50 - c) / 49)
        out["_append_vote_server_cpu_s"] = max(0.0, (s50 - s) / 49)

        def make_appender() -> Callable[[], None]:
            st = PostgresStore(scope.app_dsn)
            return lambda: st.append([units.pop()], members[0].signer)

        out["pg_capacity_appends_per_s"] = concurrent_rate(make_appender, 4, 2.5)
        notes["pg_capacity_appends_per_s"] = "4 appender threads for 2.5 s (the advisory log lock serialises them)"

        # the whole write path: Recorder.execute at batch 1 and 50 (votes of fresh transactions, pre-verified)
        votes = vote_cmds(members, 130, "e")
        for cv in votes:
            cv.vote.verifies_under(bytes(members[int(cv.vote.vote.node_id[5:]) - 1].key.verify_key))
        ones = iter(votes[:300])
        w1, c1, _ = measure(lambda: rec.execute([next(ones)]), 300, [])
        rest = iter(votes[300:1300])
        _, c_50, _ = measure(lambda: rec.execute([next(rest) for _ in range(50)]), 20, [])
        decide = out["decide_cpu_s"] + 10 * out["decide_per_member_cpu_s"]
        out["exec_cpu_s"] = max(0.0, c1 - decide)
        out["exec_vote_cpu_s"] = max(0.0, (c_50 - c1) / 49 - decide)
        out["_exec_wall_s"] = w1
        notes["exec"] = (f"Recorder.execute, batch 1: {w1 * 1e3:.2f} ms wall, {c1 * 1e3:.2f} ms CPU; batch 50: "
                         f"{c_50 * 1e3:.2f} ms CPU (decide subtracted: it is counted per vote)")
        out["refusal_cpu_s"] = out["_refusal_client_cpu_s"] + decide

        # PG row decode when following: catch-up over this log vs the same fold from memory
        n_events = store.last_position()
        follower = Recorder(PostgresStore(scope.app_dsn), MemoryGuard("follower"), members[1].signer)
        t0c = time.process_time()
        got = follower.catch_up()
        pg_fold = (time.process_time() - t0c) / max(1, got)
        out["follow_cpu_s"] = max(pg_fold, out["_memory_fold_cpu_s"]) - 10 * out["follow_per_member_cpu_s"]
        notes["follow"] = f"Recorder.catch_up from Postgres over {n_events} events: {pg_fold * 1e6:.1f} us/event"
        follow_small_reads(rec, follower, members, out, notes)
        follower.store.close()
        guard.close()
        store.close()
        cal_idle_node(env, out, notes)


def follow_small_reads(rec: Any, follower: Any, members: list[Member], out: dict[str, float],
                       notes: dict[str, str]) -> None:
    """Follow as a loaded node does: one read after each small append (it reads every 20 ms, ~one append each).

    The big pass above spreads a read's and an append's fixed costs (the query, ``Follower.feed`` and ``_settle``,
    the append's signature) over thousands of events; here they are paid per append. Fit over appends of 1 and 4
    votes: CPU per read = fixed + per row; the fixed part beyond an empty read's query and the append's signature
    (counted under verify) is ``follow_append_cpu_s``, the per-row part replaces the big pass's per-event cost.
    """
    votes = vote_cmds(members, 80, "fs")
    for cv in votes:
        cv.vote.verifies_under(bytes(members[int(cv.vote.vote.node_id[5:]) - 1].key.verify_key))
    it = iter(votes)
    follower.catch_up()
    points = []
    for batch, count in ((1, 200), (4, 100)):
        cpu = 0.0
        rows = 0
        for _ in range(count):
            rec.execute([next(it) for _ in range(batch)])
            t0 = time.process_time()
            rows += follower.catch_up()
            cpu += time.process_time() - t0
        points.append((rows / count, cpu / count))
    (r1, c1), (r4, c4) = points
    per_row = max(0.0, (c4 - c1) / (r4 - r1))
    fixed = c1 - r1 * per_row
    out["_follow_big_pass_cpu_s"] = out["follow_cpu_s"]
    out["follow_cpu_s"] = max(out["follow_cpu_s"], per_row - 10 * out["follow_per_member_cpu_s"])
    out["follow_append_cpu_s"] = max(0.0, fixed - out["query_cpu_s"] - out["vote_verify_cpu_s"])
    notes["follow_small_reads"] = (f"one catch_up after each Recorder.execute of 1 / 4 votes: {c1 * 1e6:.0f} / "
                                   f"{c4 * 1e6:.0f} us per read of {r1:.1f} / {r4:.1f} rows -> {fixed * 1e6:.0f} us "
                                   f"per read of one append + {per_row * 1e6:.0f} us per row")


def cal_idle_node(env: Any, out: dict[str, float], notes: dict[str, str]) -> None:
    """One real, idle node process (``tvote node``): API, etcd lease and gRPC threads, the 10 Hz tick, polling."""
    from devstack.trustees import TrusteeCluster

    scope = env.scope()
    try:
        cluster = TrusteeCluster(1, 1, scope.app_dsn, env.endpoint(0), scope.prefix, deadline_ms=600_000,
                                 die_with_parent=True).start()
    except Exception as e:  # the node code is being edited by others: fall back to the parts measured in-process
        notes["idle_node"] = f"could not start a real node ({type(e).__name__}: {str(e)[:120]}); composite used"
        return
    try:
        pid = cluster.trustees[0].proc.pid
        time.sleep(1.0)
        c0, t0 = server_cpu([pid]), time.perf_counter()
        time.sleep(5.0)
        out["_real_idle_node_cores"] = (server_cpu([pid]) - c0) / (time.perf_counter() - t0)
        notes["idle_node"] = "a real 1-node cluster's node process, idle for 5 s (no gossip peers)"
    finally:
        cluster.destroy()


# ------------------------------------------------------------------------------ calibration: API and idle node


def cal_api(out: dict[str, float], notes: dict[str, str]) -> None:
    """A POST /votes round trip: http.server + JSON + sign on the node side, urllib on the client's."""
    key = nacl.signing.SigningKey(bytes(32))
    server_cpu_box = [0.0]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            t0 = time.thread_time()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            sv = sign(Vote(body["tx_id"], body["value"], "node-1", 1), key)
            data = json.dumps({"accepted": [sv.to_json()], "recorded": True}).encode()
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            server_cpu_box[0] += time.thread_time() - t0

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/votes"
    count = 400
    t0c, t0p = time.thread_time(), time.process_time()
    headers = {"Authorization": "Bearer " + "x" * 16, "Content-Type": "application/json"}
    for i in range(count):
        body = json.dumps({"tx_id": f"t{i}", "value": i}).encode()
        req = urllib.request.Request(url, method="POST", data=body, headers=headers)
        with urllib.request.urlopen(req, timeout=5) as r:
            json.loads(r.read())
    client = (time.thread_time() - t0c) / count
    total = (time.process_time() - t0p) / count
    srv.shutdown()
    srv.server_close()
    out["driver_request_cpu_s"] = client
    out["api_request_cpu_s"] = max(total - client, server_cpu_box[0] / count)
    notes["api"] = ("a stand-in POST /votes handler (http.server thread per request, JSON, sign) against urllib; "
                    "the node's wait_recorded polling is not included")


def poll_threads_cpu(seconds: float = 1.5) -> float:
    """Cores an idle node's polling threads take: worker (20 ms inbox timeout) and pump/publisher (100 ms)."""
    stop = threading.Event()
    q: queue.Queue[int] = queue.Queue()

    def poll(timeout: float) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Empty):
                q.get(timeout=timeout)

    ts = [threading.Thread(target=poll, args=(x,), daemon=True) for x in (0.02, 0.1, 0.1)]
    t0, w0 = time.process_time(), time.perf_counter()
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    return (time.process_time() - t0) / (time.perf_counter() - w0)


# ------------------------------------------------------------------------------ calibration: gossip (4 processes)


def gossip_rounds(direct: bool) -> dict[str, Any]:
    """Four hosts as processes: idle CPU, saturation rounds at batch 1 and 16, one rated round at 40 msg/s."""
    import gossip_bench as gb

    n = 4
    first = gb.Proc(0, [], n - 1, True, False, direct)
    procs = [first] + [gb.Proc(i, [first.addr], n - 1, True, False, direct) for i in range(1, n)]
    try:
        for p in procs:
            p.read()  # mesh ready
        time.sleep(1.0)
        for r in procs[1:]:  # idle: wait for a round that is never published
            r.send(cmd="receive", count=1, round=10**6, timeout=3.0)
        idle = statistics.mean(r.read()["cpu"] / 3.0 for r in procs[1:])
        before = dict(first.last)
        # twice each, the cheaper kept: on a shared box contention only ever adds CPU per message
        rounds = [gb.run_round(procs, 1 + i, b, 150, None) for i, b in enumerate((1, 16, 1, 16))]
        sat = {b: min((r for r in rounds if r["batch"] == b), key=lambda r: r["cpu_ms_per_msg"]) for b in (1, 16)}
        fixed, per_vote = fit([1.0, 16.0], [sat[b]["cpu_ms_per_msg"] / 1e3 for b in (1, 16)])
        pub = min(r["pub_cpu_ms_per_msg"] for r in rounds if r["batch"] == 1) / 1e3
        rated = gb.run_round(procs, 10, 1, 80, 40.0)
        direct_msgs = first.last.get("direct_published", 0) - before.get("direct_published", 0)
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.send(cmd="quit")
        for p in procs:
            try:
                p.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.p.kill()
    return {"idle": idle, "sat": sat, "fixed": fixed, "per_vote": per_vote, "pub": pub, "rated": rated,
            "direct_msgs": direct_msgs, "published": 4 * 150 + 80}


def cal_gossip(out: dict[str, float], notes: dict[str, str]) -> None:
    """The mesh (committees over 32, or a member out of reach) and committee delivery, 4 hosts each."""
    mesh = gossip_rounds(direct=False)
    out["_gossip_idle_cores"] = mesh["idle"]
    # a receiver in a 4-host full mesh handles 3 copies in and 2 forwards out per message
    out["gossip_copy_cpu_s"] = mesh["fixed"] / 5
    out["_gossip_fixed_per_msg_s"] = mesh["fixed"]
    out["_gossip_bench_per_vote_s"] = mesh["per_vote"]
    out["_gossip_pub_cpu_per_msg_s"] = mesh["pub"]
    sat, rated = mesh["sat"], mesh["rated"]
    notes["gossip_mesh"] = (f"4 hosts, saturation rounds at batch 1/16: receiver {sat[1]['cpu_ms_per_msg']:.2f}/"
                            f"{sat[16]['cpu_ms_per_msg']:.2f} ms per message -> {mesh['fixed'] * 1e3:.2f} ms fixed + "
                            f"{mesh['per_vote'] * 1e6:.0f} us/vote; /5 copy operations (3 in, 2 forwarded); rated "
                            f"40 msg/s batch 1: p50 {rated['p50_ms']:.1f} ms, p99 {rated['p99_ms']:.1f} ms; drops "
                            f"{sat[1]['drops']}+{sat[16]['drops']}+{rated['drops']}")
    direct = gossip_rounds(direct=True)
    sat, rated = direct["sat"], direct["rated"]
    out["direct_recv_cpu_s"] = direct["fixed"]  # one copy in, nothing forwarded
    out["direct_send_cpu_s"] = direct["pub"] / 3  # the origin sends one copy to each of the 3 others
    out["_direct_bench_per_vote_s"] = direct["per_vote"]
    out["_direct_idle_cores"] = direct["idle"]
    out["gossip_hop_s"] = rated["p50_ms"] / 1e3
    notes["gossip_direct"] = (f"the same 4 hosts admitting one another (committee delivery; {direct['direct_msgs']} of "
                              f"{direct['published']} messages went direct): receiver {sat[1]['cpu_ms_per_msg']:.2f}/"
                              f"{sat[16]['cpu_ms_per_msg']:.2f} ms per message at batch 1/16 -> "
                              f"{direct['fixed'] * 1e3:.2f} ms fixed + {direct['per_vote'] * 1e6:.0f} us/vote (the "
                              f"bench's own verify); publisher {direct['pub'] * 1e3:.2f} ms per message to 3; rated "
                              f"40 msg/s: p50 {rated['p50_ms']:.1f} ms, p99 {rated['p99_ms']:.1f} ms; drops "
                              f"{sat[1]['drops']}+{sat[16]['drops']}+{rated['drops']}")


def calibrate(path: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    out: dict[str, float] = {}
    notes: dict[str, str] = {}
    before = load_avg()
    print(f"calibrating ({before})", flush=True)
    stages: list[tuple[str, Callable[[dict[str, float], dict[str, str]], None]]] = [
        ("pure core", cal_core), ("Postgres + etcd", cal_servers), ("API round trip", cal_api),
        ("gossip hosts", cal_gossip)]
    for name, fn in stages:
        s = time.monotonic()
        fn(out, notes)
        print(f"  {name}: {time.monotonic() - s:.0f} s ({load_avg()})", flush=True)
    out["_poll_threads_cores"] = poll_threads_cpu()
    idle_reads = Calibration.follow_idle_hz  # the follow schedule's reads of a quiet log (follow_idle_ms = 200)
    composite = out["_poll_threads_cores"] + idle_reads * out["query_cpu_s"]  # polling threads + idle reads
    # a peerless node's own gossip host idles too: counting the 4-mesh host's idle on top errs slightly high
    out["node_idle_cores"] = out["_gossip_idle_cores"] + max(composite, out.get("_real_idle_node_cores", 0.0))
    notes["node_idle_cores"] = ("gossip host idle in a 4-host mesh + max(real idle 1-node process, polling threads "
                                f"+ {idle_reads:g} catch-up reads/s)")
    doc = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "seconds": round(time.monotonic() - t0, 1), "load_before": before, "load_after": load_avg(),
           "machine": f"{psutil.cpu_count()} cores, Python {sys.version.split()[0]}",
           "costs": {k: float(f"{v:.6g}") for k, v in sorted(out.items())}, "notes": notes}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path} in {doc['seconds']} s")
    return doc


def load_calibration(path: Path) -> tuple[Calibration, dict[str, Any]]:
    if not path.exists():
        sys.exit(f"{path} is missing: run --calibrate first")
    doc = json.loads(path.read_text())
    return Calibration.from_dict(doc["costs"]), doc


# ------------------------------------------------------------------------------ check and predict


def measured_points(paths: list[Path]) -> list[dict[str, Any]]:
    """Load points as JSON lines: ``--run-real`` appends them to bench/scale_points.jsonl; ``bench/chaos_bench.py
    --json`` prints the same keys (fewer of them). Lines that are not JSON objects are skipped."""
    rows = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict) and ("N" in row or "nodes" in row):
                    rows.append(row)
    return rows


def ms(x: float) -> str:
    return "sat" if math.isinf(x) else f"{x * 1e3:.0f}"


def err(pred: float, meas: float | None) -> str:
    if meas is None or math.isinf(pred) or not meas:
        return "-"
    return f"{100 * (pred - meas) / meas:+.0f}%"


def point_scenario(m: dict[str, Any]) -> Scenario:
    """The point's scenario; a closed loop at the rate it completed (its driver, not the cluster, set the pace)."""
    n = int(m.get("N") or m["nodes"])
    rate = float(m["offered_tx_per_s"])
    if not m.get("open_loop") and m.get("completed_tx_per_s"):
        rate = min(rate, float(m["completed_tx_per_s"]))
    return Scenario(n, int(m.get("t") or m["threshold"]), rate)


def check_row(p: Prediction, m: dict[str, Any]) -> list[str]:
    cells = [f"{p.scenario.n}", f"{p.scenario.t}", f"{p.scenario.rate:g}", "open" if m.get("open_loop") else "closed"]
    pairs = [(p.completed_tx_per_s, m.get("completed_tx_per_s"), "{:.1f}", 1.0),
             (p.cpu_ms_per_consensus, m.get("cpu_ms_per_consensus"), "{:.0f}", 1.0),
             (p.node_cpu_cores, m.get("node_cpu_pct_mean"), "{:.1f}", 100.0),
             (p.votes_per_message, m.get("votes_per_msg"), "{:.2f}", 1.0),
             (p.record_batch, m.get("record_batch_mean"), "{:.1f}", 1.0),
             (p.reception_p50_s, m.get("reception_p50_ms"), None, 1e3),
             (p.reception_p99_s, m.get("reception_p99_ms"), None, 1e3),
             (p.e2e_p50_s, m.get("e2e_p50_ms"), None, 1e3), (p.e2e_p99_s, m.get("e2e_p99_ms"), None, 1e3)]
    for pred, meas, fmt, scale in pairs:
        shown = ms(pred) if fmt is None else "inf" if math.isinf(pred) else fmt.format(pred * scale)
        cells += [shown, "-" if meas is None else f"{meas:g}", err(pred * scale, meas)]
    for key, col in (("etcd", "etcd_cpu_pct"), ("postgres", "postgres_cpu_pct")):
        pred, meas = 100 * p.server_cpu_cores[key], m.get(col)
        cells += [f"{pred:.1f}", "-" if meas is None else f"{meas:g}", err(pred, meas)]
    cells += [p.bottleneck, f"{max(p.utilisation.values()):.2f}"]
    return cells


CHECK_HEAD = ["N", "t", "offered", "loop", "done pred", "meas", "err", "cpu ms/consensus pred", "meas", "err",
              "node cpu% pred", "meas", "err", "votes/msg pred", "meas", "err", "record batch pred", "meas", "err",
              "rec p50 pred", "meas", "err", "rec p99 pred", "meas", "err", "e2e p50 pred", "meas", "err",
              "e2e p99 pred", "meas", "err", "etcd cpu% pred", "meas", "err", "pg cpu% pred", "meas", "err",
              "bottleneck", "max util"]


def md(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def run_real(spec: str, open_loop: bool, path: Path) -> dict[str, Any]:
    """One real load point (``chaos.loadpoint.run_point``, as ``bench/chaos_bench.py`` runs it), appended to ``path``.
    """
    from chaos.harness import ChaosEnv
    from chaos.loadpoint import run_point

    parts = spec.split(":")
    n, rate, txs = int(parts[0]), float(parts[1]), int(parts[2]) if len(parts) > 2 else 60
    before = load_avg()
    print(f"\nfresh real load point N={n} rate={rate:g}/s, {txs} txs, {'open' if open_loop else 'closed'} loop "
          f"({before}) ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="scale-real-") as tmp, ChaosEnv(Path(tmp)) as env:
        m = run_point(env, n, rate, txs, open_loop=open_loop)
    m |= {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": before,
          "load_after": load_avg()}
    print(json.dumps(m), flush=True)
    with path.open("a") as f:
        f.write(json.dumps(m) + "\n")
    return m


def check(cal: Calibration, points: list[Path], specs: list[str], open_loop: bool) -> None:
    for spec in specs:
        run_real(spec, open_loop, points[0])
    got = measured_points(points)
    print(f"\nPredicted vs measured: {len(got)} load points from {', '.join(str(p) for p in points)}; "
          f"{SHARED_BOX.name}; the node as it is (aimed delivery, one recorder, every node follows). Latencies in "
          "ms; 'sat' = the model puts the offered rate past saturation (no steady state). A closed loop waits for "
          "a transaction's N casts to be answered (durable) before the next: its completed rate is bounded by the "
          "driver, which the model does not describe, so it is predicted at the rate it completed.")
    rows = []
    for m in got:
        rows.append(check_row(predict(point_scenario(m), SHARED_BOX, cal), m))
        when = m.get("measured_at")
        if when:
            print(f"  N={point_scenario(m).n} at {point_scenario(m).rate:g}/s measured {when}, {m.get('load_before')} "
                  f"before, {m.get('load_after')} after")
    print(md(CHECK_HEAD, rows))


ONE_CORE = DEPLOYMENTS[0]


def unbounded_stores(cal: Calibration) -> Calibration:
    """The same costs with etcd's and the Postgres log lock's capacities unbounded.

    Why: the model credits batching at the unloaded worker cycle, so past ~1 vote per append it counts one append
    (and one etcd transaction) per vote, against capacities measured with Python clients on this box. The real
    recorder drains whatever queued while its last append waited, so as the lock queues its batches grow and the
    appends per second level off: the stores' fixed costs then cost latency, not throughput. This variant shows
    where the CPU alone would stop.
    """
    return replace(cal, etcd_capacity_txn_per_s=math.inf, pg_capacity_appends_per_s=math.inf)


def show_predictions(cal: Calibration) -> None:
    head = ["scenario", "N", "t", "tx/s", "deployment", "transport", "saturated", "util (offered)",
            "first to saturate", "max tx/s", "node cpu % at max", "cpu ms/consensus at max", "etcd txn/s at max",
            "pg appends/s at max", "votes/msg at max", "rec p50/p99 ms at 0.8 max", "e2e p50/p99 ms at 0.8 max"]
    rows = []
    stages: list[tuple[str, Prediction]] = []
    for name, n, t, rate in SCENARIOS_14_3:
        for dep in DEPLOYMENTS:
            p = predict(Scenario(n, t, rate), dep, cal)
            near = predict(Scenario(n, t, 0.8 * p.max_tx_per_s), dep, cal)
            rows.append([name, f"{n}", f"{t}", f"{rate:g}", dep.name, "aimed" if p.aimed else "mesh",
                         "yes" if p.saturated else "no", f"{p.bottleneck} {max(p.utilisation.values()):.2f}",
                         p.first_saturating, f"{p.max_tx_per_s:.2g}" if p.max_tx_per_s < 1 else
                         f"{p.max_tx_per_s:.1f}", f"{100 * p.node_cpu_cores:.0f}",
                         "-" if math.isinf(p.cpu_ms_per_consensus) else f"{p.cpu_ms_per_consensus:.0f}",
                         f"{p.etcd_txn_per_s:.0f}", f"{p.pg_appends_per_s:.0f}",
                         f"{predict(Scenario(n, t, p.completed_tx_per_s), dep, cal).votes_per_message:.1f}",
                         f"{ms(near.reception_p50_s)}/{ms(near.reception_p99_s)}",
                         f"{ms(near.e2e_p50_s)}/{ms(near.e2e_p99_s)}"])
            if dep is ONE_CORE:
                stages.append((f"{name} N={n}", predict(Scenario(n, t, rate), dep, unbounded_stores(cal))))
    print("Seed 14.3 scenarios, the node as it is. Utilisation is at the offered rate (the most loaded resource); "
          "'max tx/s' is where the first resource reaches 1; CPU (% of one core per node), CPU per consensus (all "
          "nodes) and store rates at that max (or at the offered rate when it is sustained); latencies at 80 % of "
          "the max. Resources: node cpu = the machine's cores, node GIL = one interpreter, gossip thread = the Trio "
          "thread, worker = the recording thread's per-vote work, etcd, postgres = the log lock, box cpu = 2 cores "
          "shared by everything.")
    print(md(head, rows))
    keys = list(stages[0][1].node_cpu_by_stage)
    print("\nPer-node CPU by stage (% of one core, one core per node), with the stores' fixed costs not limiting (see "
          "the what-ifs): at the offered rate, or at the CPU's max when that is lower:")
    print(md(["point", "tx/s", *keys, "total", "cpu ms/consensus"],
             [[name, f"{p.completed_tx_per_s:.1f}", *(f"{100 * p.node_cpu_by_stage[k]:.1f}" for k in keys),
               f"{100 * p.node_cpu_cores:.0f}", f"{p.cpu_ms_per_consensus:.0f}"] for name, p in stages]))
    print("\nWhat-ifs, one core per node: the stores' capacities unbounded (see unbounded_stores), then the "
          "publisher's interval under load x4 (more votes per message), and aimed delivery for committees over 32 "
          "(the code keeps the mesh there).")
    rows = []
    x4 = {"publish_interval_s": 0.2, "publish_interval_per_member_s": 0.05, "max_publish_interval_s": 2.0}
    free = unbounded_stores(cal)
    variants = [("the code", cal, Gossip()), ("stores not limiting", free, Gossip()),
                ("stores not limiting, interval x4", free, Gossip(**x4)),
                ("stores not limiting, aimed at any N", free, Gossip(direct_max_peers=10**6)),
                ("stores not limiting, aimed at any N, interval x4", free, Gossip(direct_max_peers=10**6, **x4))]
    for name, n, t, rate in SCENARIOS_14_3[:3]:
        for label, c, g in variants:
            top, first = max_rate(Scenario(n, t, rate), ONE_CORE, c, g)
            at = min(rate, 0.8 * top)
            near = predict(Scenario(n, t, at), ONE_CORE, c, g)
            rows.append([name, f"{n}", f"{rate:g}", label, f"{top:.1f}", first, f"{near.votes_per_message:.1f}",
                         f"{ms(near.e2e_p50_s)}/{ms(near.e2e_p99_s)} at {at:.0f}/s"])
    print(md(["scenario", "N", "wanted tx/s", "variant", "max tx/s", "first to saturate", "votes/msg",
              "e2e p50/p99 ms at min(wanted, 0.8 max)"], rows))


def show_calibration(doc: dict[str, Any]) -> None:
    print(f"Calibration {CAL_FILE.name}: measured {doc['measured_at']} in {doc['seconds']} s; "
          f"{doc['load_before']} before, {doc['load_after']} after")
    for k, v in doc["costs"].items():
        timed = k.endswith("_s") and not k.endswith("_per_s")
        unit = ("us", 1e6) if timed and v < 1e-3 else ("ms", 1e3) if timed else ("", 1)
        print(f"  {k:<32} {v * unit[1]:>10.3f} {unit[0]}")
    for k, v in doc.get("notes", {}).items():
        print(f"  - {k}: {v}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calibrate", action="store_true", help="measure the per-stage costs, write calibration.json")
    ap.add_argument("--check", action="store_true", help="predicted vs measured for the load points of --points")
    ap.add_argument("--points", type=Path, nargs="+", default=[POINTS],
                    help="JSON-lines files of load points (the first one receives --run-real's)")
    ap.add_argument("--run-real", nargs="*", default=[], metavar="N:RATE[:TXS]",
                    help="with --check: first run these real load points (60 txs unless given), appended to --points")
    ap.add_argument("--open-loop", action="store_true", help="--run-real offers without waiting for answers")
    ap.add_argument("--predict", action="store_true", help="the seed's 14.3 scenarios on three deployments")
    ap.add_argument("--calibration", type=Path, default=CAL_FILE)
    args = ap.parse_args()
    if not (args.calibrate or args.check or args.predict):
        ap.error("give --calibrate, --check and/or --predict")
    if args.calibrate:
        calibrate(args.calibration)
    cal, doc = load_calibration(args.calibration)
    show_calibration(doc)
    if args.check:
        print()
        check(cal, args.points, args.run_real, args.open_loop)
    if args.predict:
        print()
        show_predictions(cal)


if __name__ == "__main__":
    main()
