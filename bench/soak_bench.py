"""Soak benchmark (issue 14): is the system flat over time? Prints numbers and writes JSON and a PNG; asserts nothing.

Two modes:

``--mode cluster`` (default): N=4 trustee processes on a private Postgres (fsync on) and a 3-member etcd,
offered ``--rate`` transactions per second for ``--minutes``, with a submitter writing each consensus on
anvil (transactions end CONFIRMED as in production: only final ones may leave a node's memory); one
trustee is restarted at a third of the run and Postgres at two thirds. Each interval (``--interval-s``,
a minute by default) records: completed tx/s, e2e p50/p99 (client cast -> ThresholdReached in the log),
RSS and CPU of every process (trustees, the submitter, Postgres, etcd), transactions confirmed on chain,
the log's length and the database's size, and the restarted node's time to ready. Writes ``soak.json`` and ``soak.png``.

``--mode synthetic``: one trustee's recorder and ledger alone (decide + etcd guard + Postgres append; a private
Postgres with fsync off: memory and start-up are measured, not disk throughput)
through ``--txs`` synthetic transactions (4 members, t=3, every transaction decided and its deadline
fired, exactly as a node's ledger sees them), sampling the process's RSS every 10,000. The submitter's
steps that make each transaction CONFIRMED come from a second process (a submitter is its own process
in production, with its own follower: in this one it would double the memory measured as the node's).
Then a cold start on that log: folding it from position 0, and from the node's snapshot. Writes
``soak-synthetic.json`` and ``soak-synthetic.png``.

Both print the two figures the issue names (as JSON on the last line):
``rss_growth_mb_per_100k_tx`` (RSS slope over the run, per 100,000 transactions) and
``startup_s_per_million_events`` (a cold start's seconds per million log events: from the snapshot,
with the fold from 0 beside it).

Run: ``.venv/bin/python bench/soak_bench.py --mode synthetic --txs 1000000``
     ``.venv/bin/python bench/soak_bench.py --minutes 30 --rate 10``
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import psutil  # noqa: E402
import psycopg  # noqa: E402
from helpers import OPERATOR, SUBMITTER, admin, trustees  # noqa: E402

from chaos.scenarios import SubmitterRig  # noqa: E402
from devstack.etcd import Etcd  # noqa: E402
from devstack.postgres import Postgres  # noqa: E402
from devstack.trustees import TrusteeCluster  # noqa: E402
from events import rules  # noqa: E402
from events.errors import StoreUnavailable  # noqa: E402
from events.follow import DEFAULT_RETAIN_FINAL  # noqa: E402
from events.postgres_store import PostgresStore  # noqa: E402
from observability.allocator import hold_mmap_threshold  # noqa: E402
from recording.etcd_guard import EtcdGuard  # noqa: E402
from recording.recorder import Recorder  # noqa: E402
from tvote import db  # noqa: E402

OUT = Path(__file__).resolve().parent


def memory_parts() -> dict[str, float]:
    """Where this process's resident memory sits, to tell Python objects from the C heap's fragmentation:
    the main malloc heap, anonymous mappings (pymalloc arenas, other threads' malloc arenas, large
    blocks), file-backed pages, and pymalloc's count of live blocks (thousands)."""
    parts = {"heap_mb": 0.0, "anon_mb": 0.0, "file_mb": 0.0}
    name = ""
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=6)
            if "-" in head[0] and len(head) >= 5:  # a mapping's first line: address, perms, offset, dev, inode[, path]
                name = head[5].strip() if len(head) > 5 else ""
            elif head[0] == "Rss:":
                kb = int(head[1]) / 1024
                key = "heap_mb" if name == "[heap]" else "anon_mb" if not name else "file_mb"
                parts[key] += kb
    out = {k: round(v, 1) for k, v in parts.items()}
    out["py_blocks_k"] = round(sys.getallocatedblocks() / 1000, 1)
    out["py_arenas"] = pymalloc_arenas()
    out.update(malloc_totals())
    return out


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_totals() -> dict[str, float]:
    """glibc's own account over every arena (``mallinfo2``): bytes in use, free inside its heaps (fragmentation
    RSS may keep), and in blocks mmapped on their own; live C and large-Python data vs what the allocator holds."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):  # not glibc (or older than 2.33)
        return {}
    return {"malloc_used_mb": round(m.uordblks / 2**20, 1), "malloc_free_mb": round(m.fordblks / 2**20, 1),
            "malloc_mmap_mb": round(m.hblkhd / 2**20, 1)}


def pymalloc_arenas() -> int:
    """pymalloc's arenas (1 MiB each in 3.11) now allocated: with ``py_blocks_k`` flat, more arenas is
    fragmentation of Python's own allocator. CPython prints it only (``sys._debugmallocstats`` to fd 2)."""
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        try:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        for line in f.read().decode(errors="replace").splitlines():
            if line.startswith("# arenas allocated current"):
                return int(line.split("=")[1].replace(",", ""))
    return -1


def rss_mb(pid: int | None = None) -> float:
    return psutil.Process(pid or os.getpid()).memory_info().rss / 2**20


def slope_per_100k(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (transactions, MB), per 100,000 transactions."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 100_000


def chart(path: Path, title: str, panels: list[tuple[str, list[float], dict[str, list[float]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), sharex=True)
    for ax, (label, xs, series) in zip(axes if len(panels) > 1 else [axes], panels, strict=True):
        for name, ys in series.items():
            ax.plot(xs[:len(ys)], ys, label=name)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- synthetic: one node's recorder and ledger --------------------------------------------------


def retrying(rec: Recorder, commands: list | None, stalls: list[float]) -> None:
    """As a node's worker does: a store that does not answer is waited for, never a reason to stop."""
    t1 = time.monotonic()
    while True:
        try:
            rec.execute(commands) if commands is not None else rec.catch_up()
            break
        except StoreUnavailable:
            if time.monotonic() - t1 > 120:
                raise
            time.sleep(0.2)
    if time.monotonic() - t1 > 1.0:
        stalls.append(round(time.monotonic() - t1, 2))


def _submitter_steps(conn: Connection, dsn: str, etcd: str, retain: int) -> None:
    """The submitter's process: for each batch (start, stop) it is sent, the four logged steps of a chain
    write, so each transaction ends CONFIRMED; None ends it."""
    sub = Recorder(PostgresStore(dsn), EtcdGuard(etcd, "/soak", SUBMITTER.writer), SUBMITTER, retain_final=retain)
    stalls: list[float] = []
    try:
        while (job := conn.recv()) is not None:
            batch = range(*job)
            retrying(sub, None, stalls)
            retrying(sub, [rules.StartSubmission(f"s{k}", "sub-1", 1) for k in batch], stalls)
            retrying(sub, [rules.RecordSigned(f"s{k}", 1, 31337, "0xsender", k, f"0x{k:064x}", "0x01")
                           for k in batch], stalls)
            retrying(sub, [c for k in batch for c in (rules.RecordBroadcast(f"s{k}", 1, f"0x{k:064x}"),
                                                      rules.RecordConfirmed(f"s{k}", 1, f"0x{k:064x}", 1))], stalls)
            conn.send("ok")
    except Exception as e:  # the parent is waiting for a reply: give it the cause rather than a hang
        conn.send(f"{type(e).__name__}: {e}")
    finally:
        sub.store.close()


def _traced_growth(base: tracemalloc.Snapshot | None, done: int) -> tracemalloc.Snapshot:
    """Diagnostics (``--tracemalloc``): the first snapshot is the baseline; each later one prints, to stderr,
    the source lines whose live Python allocations grew most since it (what of the heap grows with history)."""
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    if base is None:
        return snap
    stats = snap.compare_to(base, "traceback" if tracemalloc.get_traceback_limit() > 1 else "lineno")
    print(f"--- tracemalloc at {done:,} txs: growth since the first sample", file=sys.stderr)
    for st in stats[:25]:
        print(f"{st.size_diff / 1024:+10.1f} KiB {st.count_diff:+8d} blocks  "
              + " <- ".join(str(f) for f in st.traceback), file=sys.stderr)
    print(f"total traced {sum(st.size for st in stats) / 2**20:.1f} MiB", file=sys.stderr, flush=True)
    return base


def synthetic(args: argparse.Namespace) -> dict:
    hold_mmap_threshold()  # as ``tvote node`` does at its start (observability.allocator)
    pg = Postgres(fsync=False).start()
    etcd = Etcd(size=1).start()
    try:
        pg.create_database("tvote")
        db.upgrade(pg.url("tvote"))
        dsn = pg.dsn("tvote", user=db.APP_ROLE)
        ts = trustees(4)
        ep = etcd.endpoints[0]

        def guard(writer: str) -> EtcdGuard:
            return EtcdGuard(ep, "/soak", writer)

        op = Recorder(PostgresStore(dsn), guard(OPERATOR.writer), OPERATOR)
        op.execute(admin(ts, 3, deadline_ms=1)[:1])
        op.execute([*admin(ts, 3, deadline_ms=1)[1:], rules.AdmitWriter(SUBMITTER.writer, "submitter",
                                                                         SUBMITTER.public_key, "op")])
        op.store.close()
        me = ts[0]
        rss_start = rss_mb()
        node = Recorder(PostgresStore(dsn), guard(me.node_id), me.signer, retain_final=args.retain)
        node.catch_up()
        # the submitter's steps, so transactions end CONFIRMED as in production (a final one may leave memory),
        # from its own process: batch k is confirmed there while this one decides batch k+1
        ctx = multiprocessing.get_context("spawn")  # no fork: the etcd client's gRPC threads do not survive one
        to_sub, sub_end = ctx.Pipe()
        sub = ctx.Process(target=_submitter_steps, args=(sub_end, dsn, ep, args.retain), daemon=True)
        sub.start()
        samples: list[dict] = []
        traced = None
        if args.tracemalloc:
            tracemalloc.start(args.tracemalloc)
        t0 = time.monotonic()
        per_batch = 100
        stalls: list[float] = []
        sub_busy = False

        def sub_done() -> None:
            nonlocal sub_busy
            if sub_busy:
                reply = to_sub.recv()
                if reply != "ok":
                    raise RuntimeError(f"the submitter process failed: {reply}")
                sub_busy = False

        for start in range(0, args.txs, per_batch):
            batch = range(start, min(args.txs, start + per_batch))
            retrying(node, [x.receive(f"s{k}", 1, now=k * 10, ts=k * 10) for k in batch for x in ts], stalls)
            retrying(node, [rules.CheckDeadline(f"s{k}", k * 10 + 5) for k in batch], stalls)
            sub_done()
            to_sub.send((batch.start, batch.stop))
            sub_busy = True
            retrying(node, None, stalls)
            done = batch.stop
            if done % 10_000 == 0 or done == args.txs:
                gc.collect()
                etcd_mb, etcd_keys = 0.0, -1
                with contextlib.suppress(Exception):  # figures, not a reason to stop the run
                    etcd_mb = node.guard.client.status().db_size / 2**20
                    etcd_keys = node.guard.client.get_prefix_response("/soak", count_only=True).count
                samples.append({"txs": done, "rss_mb": round(rss_mb(), 1), **memory_parts(),
                                "events": node.position,
                                "etcd_db_mb": round(etcd_mb, 1), "etcd_keys": etcd_keys,
                                "store_stalls_over_1s": len(stalls),
                                "longest_stall_s": max(stalls, default=0.0),
                                "in_memory_txs": len(node.ledger.txs), "elapsed_s": round(time.monotonic() - t0, 1)})
                print(json.dumps(samples[-1]), flush=True)
                if args.tracemalloc:
                    traced = _traced_growth(traced, done)
        sub_done()
        to_sub.send(None)
        sub.join(30)
        retrying(node, None, stalls)  # the last batch's confirmations
        events = node.position
        node.save_snapshot()
        node.store.close()
        # cold starts on that log: from position 0, and from the snapshot
        fold_s: float | None = None  # not measured (--no-fold-from-0)
        if args.fold_from_0:
            cold = Recorder(PostgresStore(dsn), guard(me.node_id), me.signer, retain_final=args.retain)
            t1 = time.monotonic()
            cold.catch_up()
            fold_s = time.monotonic() - t1
            cold.store.close()
        warm = Recorder(PostgresStore(dsn), guard(me.node_id), me.signer, retain_final=args.retain)
        t1 = time.monotonic()
        loaded = warm.load_snapshot()
        warm.catch_up()
        snap_s = time.monotonic() - t1
        assert loaded == events and (not args.fold_from_0 or warm.ledger.cluster == cold.ledger.cluster)
        warm.store.close()
        with psycopg.connect(dsn) as c:
            db_mb = c.execute("SELECT pg_database_size('tvote')").fetchone()[0] / 2**20
    finally:
        etcd.destroy()
        pg.destroy()
    after10k = next((s["rss_mb"] for s in samples if s["txs"] >= 10_000), samples[0]["rss_mb"])
    steady = [(s["txs"], s["rss_mb"]) for s in samples if s["txs"] >= min(args.txs, 2 * args.retain)]
    result = {
        "mode": "synthetic", "txs": args.txs, "events": events, "retain_final": args.retain,
        "rss_mb_at_start": round(rss_start, 1), "rss_mb_after_10k_tx": after10k, "rss_mb_at_end": samples[-1]["rss_mb"],
        "rss_growth_mb_per_100k_tx": round(slope_per_100k(steady), 3),
        "startup_s_per_million_events": round(snap_s / (events / 1e6), 3),
        "startup_from_snapshot_s": round(snap_s, 2), "startup_fold_from_0_s": fold_s and round(fold_s, 2),
        "fold_from_0_s_per_million_events": fold_s and round(fold_s / (events / 1e6), 2),
        "database_mb": round(db_mb, 1), "samples": samples,
    }
    (args.out / "soak-synthetic.json").write_text(json.dumps(result, indent=1))
    xs = [s["txs"] / 1000 for s in samples]
    chart(args.out / "soak-synthetic.png", f"one node's recorder and ledger, {args.txs:,} synthetic transactions "
          f"(thousands on x)", [("RSS MB", xs, {"node process": [s["rss_mb"] for s in samples]}),
                                ("txs in memory", xs, {"ledger": [s["in_memory_txs"] for s in samples]}),
                                ("log events (M)", xs, {"events": [s["events"] / 1e6 for s in samples]}),
                                ("etcd db MB", xs, {"etcd": [s["etcd_db_mb"] for s in samples]}),
                                ("etcd keys (k)", xs, {"etcd": [s.get("etcd_keys", 0) / 1000 for s in samples]})])
    return result


# --- cluster: N=4 processes under steady load, with a node and a Postgres restart -----------------


class Load:
    """Offers ``rate`` transactions per second; every trustee casts each one (the client honours 503s)."""

    def __init__(self, cluster: TrusteeCluster, rate: float) -> None:
        self.cluster, self.rate = cluster, rate
        self.sent: dict[str, float] = {}
        self.stop = threading.Event()
        self.refused = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _cast(self, i: int, tx: str) -> None:
        with contextlib.suppress(Exception):
            code, _ = self.cluster.cast(i, tx, 1)
            self.refused += code != 202

    def _run(self) -> None:
        """Offers on a fixed schedule; each transaction's casts go to the trustees at once, as N clients would
        (casting them one after another made the driver, not the cluster, the bottleneck)."""
        n = len(self.cluster.trustees)
        with ThreadPoolExecutor(4 * n) as pool:
            k, t0 = 0, time.monotonic()
            while not self.stop.is_set():
                tx = f"soak{k}"
                self.sent[tx] = time.time()
                for i in range(n):
                    pool.submit(self._cast, i, tx)
                k += 1
                time.sleep(max(0.0, t0 + k / self.rate - time.monotonic()))


def _processes(cluster: TrusteeCluster, pg: Postgres, etcd: Etcd, rig: SubmitterRig) -> dict[str, psutil.Process]:
    procs = {t.node_id: psutil.Process(t.proc.pid) for t in cluster.alive()}
    for i, p in enumerate(rig.procs):
        if p.poll() is None:
            procs[f"submitter{i}"] = psutil.Process(p.pid)
    for i, m in enumerate(etcd.members):
        if m.proc and m.proc.poll() is None:
            procs[f"etcd{i}"] = psutil.Process(m.proc.pid)
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        procs["postgres"] = psutil.Process(pid)
    return procs


def _rss_cpu(p: psutil.Process, with_children: bool) -> tuple[float, float]:
    group = [p, *(p.children(recursive=True) if with_children else [])]
    rss = cpu = 0.0
    for q in group:
        with contextlib.suppress(psutil.Error):
            rss += q.memory_info().rss / 2**20
            t = q.cpu_times()
            cpu += t.user + t.system
    return rss, cpu


def cluster(args: argparse.Namespace) -> dict:
    pg = Postgres().start()
    etcd = Etcd(size=3).start()
    c = None
    # the submitter writes each consensus on anvil, so transactions end CONFIRMED as in production (only a
    # final transaction may leave a node's memory: without it every one would stay THRESHOLD_REACHED)
    rig = SubmitterRig(Path(tempfile.mkdtemp(prefix="soak-chain-")))
    try:
        pg.create_database("tvote")
        db.upgrade(pg.url("tvote"))
        dsn = pg.dsn("tvote", user=db.APP_ROLE)
        c = TrusteeCluster(4, 3, dsn, ",".join(etcd.endpoints), "/tvote", deadline_ms=5000)
        for tr in c.trustees:  # the plateau within the run: more transactions than a node keeps
            tr.extra_args = ["--retain-final", str(args.retain)]
        c.start()
        rig.start_chain()
        rig.launch(c, dsn, etcd.endpoints[0], "/tvote")
        load = Load(c, args.rate)
        load.thread.start()
        total = args.minutes * 60
        intervals: list[dict] = []
        cpu_before: dict[tuple[str, int], float] = {}
        seen_pos, reached = 0, {}
        restarts: dict[str, float] = {}
        t0 = time.monotonic()
        next_sample = t0 + args.interval_s
        did_node = did_pg = False
        while time.monotonic() - t0 < total:
            time.sleep(0.5)
            elapsed = time.monotonic() - t0
            if not did_node and elapsed > total / 3:
                did_node = True
                c.kill(1)
                t1 = time.monotonic()
                c.restart(1)
                restarts["node_restart_to_ready_s"] = round(time.monotonic() - t1, 2)
            if not did_pg and elapsed > 2 * total / 3:
                did_pg = True
                t1 = time.monotonic()
                pg.stop()
                pg.start()
                restarts["postgres_restart_s"] = round(time.monotonic() - t1, 2)
            if time.monotonic() < next_sample:
                continue
            next_sample += args.interval_s
            with contextlib.suppress(psycopg.Error), psycopg.connect(dsn) as conn:
                for pos, stream, at in conn.execute(
                        "SELECT position, stream_id, recorded_at FROM events WHERE position > %s "
                        "AND event_type = 'ThresholdReached' ORDER BY position", (seen_pos,)):
                    reached[stream.removeprefix("tx:")] = at.timestamp()
                    seen_pos = pos
                log_len = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
                db_mb = conn.execute("SELECT pg_database_size('tvote')").fetchone()[0] / 2**20
            window = [tx for tx, at in reached.items() if at >= time.time() - args.interval_s]
            lat = sorted((reached[tx] - load.sent[tx]) * 1000 for tx in window if tx in load.sent)
            row: dict = {"minute": round(elapsed / 60, 2), "completed_tx_s": round(len(window) / args.interval_s, 2),
                         "e2e_p50_ms": round(lat[len(lat) // 2], 1) if lat else None,
                         "e2e_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
                         "log_events": log_len, "postgres_mb": round(db_mb, 1), "rss_mb": {}, "cpu_cores": {}}
            with contextlib.suppress(psycopg.Error), psycopg.connect(dsn) as conn:
                row["confirmed"] = conn.execute(
                    "SELECT count(*) FROM events WHERE event_type = 'SubmissionConfirmed'").fetchone()[0]
            for name, p in _processes(c, pg, etcd, rig).items():
                rss, cpu = _rss_cpu(p, with_children=name == "postgres")
                row["rss_mb"][name] = round(rss, 1)
                was = cpu_before.get((name, p.pid), 0.0)  # a restarted process starts from 0 CPU seconds
                row["cpu_cores"][name] = round((cpu - was) / args.interval_s, 3)
                cpu_before[(name, p.pid)] = cpu
            intervals.append(row)
            print(json.dumps(row), flush=True)
        load.stop.set()
        load.thread.join(30)
        completed = len(reached)
    finally:
        rig.close()
        if c is not None:
            c.destroy()
        etcd.destroy()
        pg.destroy()
    node_rss = [(r["minute"] * 60 * args.rate, statistics.fmean(v for k, v in r["rss_mb"].items()
                                                               if k.startswith("trustee")))
                for r in intervals[1:] if r["rss_mb"]]
    log_events = intervals[-1]["log_events"] if intervals else 0
    result = {"mode": "cluster", "minutes": args.minutes, "rate": args.rate, "completed": completed,
              "offered": len(load.sent), "client_refusals": load.refused,
              "rss_growth_mb_per_100k_tx": round(slope_per_100k(node_rss), 3),
              "startup_s_per_million_events": round(restarts.get("node_restart_to_ready_s", 0)
                                                    / max(log_events / 1e6, 1e-9), 3),
              **restarts, "log_events": log_events, "intervals": intervals}
    (args.out / "soak.json").write_text(json.dumps(result, indent=1))
    xs = [r["minute"] for r in intervals]
    names = sorted({k for r in intervals for k in r["rss_mb"]})
    chart(args.out / "soak.png", f"N=4 t=3 at {args.rate:g} tx/s (node restart at 1/3, Postgres restart at 2/3)", [
        ("tx/s", xs, {"completed": [r["completed_tx_s"] for r in intervals]}),
        ("confirmed on chain (k)", xs, {"confirmed": [r.get("confirmed", 0) / 1000 for r in intervals]}),
        ("e2e ms", xs, {"p50": [r["e2e_p50_ms"] or 0 for r in intervals],
                        "p99": [r["e2e_p99_ms"] or 0 for r in intervals]}),
        ("RSS MB", xs, {n: [r["rss_mb"].get(n, 0) for r in intervals] for n in names}),
        ("CPU cores", xs, {n: [r["cpu_cores"].get(n, 0) for r in intervals] for n in names}),
        ("log events / DB MB", xs, {"events (k)": [r["log_events"] / 1000 for r in intervals],
                                    "postgres MB": [r["postgres_mb"] for r in intervals]}),
    ])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("cluster", "synthetic"), default="cluster")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--interval-s", type=float, default=60.0)
    ap.add_argument("--txs", type=int, default=100_000)
    ap.add_argument("--retain", type=int, default=DEFAULT_RETAIN_FINAL, help="finished transactions kept in memory")
    ap.add_argument("--no-fold-from-0", dest="fold_from_0", action="store_false",
                    help="skip the cold start from position 0 (about 90 s per million events here)")
    ap.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                    help="diagnostics: trace Python allocations (FRAMES deep) and print what grew since 10k txs")
    ap.add_argument("--out", type=Path, default=OUT, help="directory for the JSON and the PNG (default: bench/)")
    args = ap.parse_args()
    result = synthetic(args) if args.mode == "synthetic" else cluster(args)
    figures = {k: v for k, v in result.items() if not isinstance(v, list | dict)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
