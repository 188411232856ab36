"""Event-core benchmarks, side by side in one run (issue: the event-sourced core).

Prints numbers; asserts nothing. Services run with durability on: Postgres fsync=on and
synchronous_commit=on, etcd on disk. Run: ``.venv/bin/python bench/append_bench.py``.

- decide+evolve per vote (pure core): p50/p99 microseconds
- full path per node process: decide + etcd CAS guard + Postgres append, batch 1 / 100 / 500
- the raw limit: psycopg executemany and COPY of the same rows into a plain table
- our store alone (``PostgresStore.append``) and the eventsourcing library's PostgreSQL application
  recorder appending the same pre-made events (the like-for-like comparison of the two recorders)
- projection rebuild (replay into fresh tables): events/s
- ``--batch1``: only the single-vote figures, interleaved: the full path at batch 1 (one execute per vote),
  single votes arriving one by one and recorded as a node's worker does (whatever arrived during the last
  append goes in the next: group commit), and the eventsourcing recorder's single-event append
- ``--replication``: only the full path on a three-member Patroni primary with the commit waiting for the
  synchronous standby, and on the same primary without that wait (``synchronous_commit=local``: one
  server's durability), runs interleaved, with the ratio per pair (issue 17)
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import psycopg  # noqa: E402
from helpers import OPERATOR, admin, signer, trustees  # noqa: E402

from devstack.etcd import Etcd  # noqa: E402
from devstack.patroni import PatroniCluster  # noqa: E402
from devstack.postgres import Postgres  # noqa: E402
from events import rules  # noqa: E402
from events.postgres_store import PostgresStore  # noqa: E402
from events.store import NewEvent, Unit, canonical_json  # noqa: E402
from projections.replay import replay  # noqa: E402
from recording.etcd_guard import EtcdGuard  # noqa: E402
from recording.recorder import Recorder  # noqa: E402
from tvote import db  # noqa: E402


def fresh_db(server: Postgres | PatroniCluster) -> str:
    """A new database on ``server``, migrated; the app role's DSN (each run starts on an empty log)."""
    name = f"b{uuid.uuid4().hex[:8]}"
    server.create_database(name)
    db.upgrade(server.url(name))
    return server.dsn(name, user=db.APP_ROLE)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def vote_commands(n_votes: int, n: int = 7, tag: str = "") -> tuple[list, list]:
    ts = trustees(n)
    boot = admin(ts, 5)  # the operator's genesis, the members, t=5
    cmds = []
    for k in range(n_votes // n + 1):
        for x in ts:
            cmds.append(x.receive(f"tx{tag}_{k}", 42, now=1))
    return boot, cmds[:n_votes]


def bench_pure(n_votes: int) -> dict:
    boot, cmds = vote_commands(n_votes)
    ledger = rules.Ledger()
    for c in boot:
        for e in ledger.decide(c):
            ledger.apply(e)
    lat = []
    for c in cmds:
        t0 = time.perf_counter()
        for e in ledger.decide(c):
            ledger.apply(e)
        lat.append((time.perf_counter() - t0) * 1e6)
    return {"votes": len(cmds), "p50_us": round(pct(lat, 0.5), 1), "p99_us": round(pct(lat, 0.99), 1),
            "votes_per_s": round(len(cmds) / (sum(lat) / 1e6))}


def bench_full_path(dsn: str, endpoint: str, n_votes: int, batch: int, edge_thread: bool = False) -> dict:
    """decide + etcd CAS + PG append; ``edge_thread``: as in a node process, another thread checks the
    signatures of batch k+1 (the gossip edge; libsodium releases the GIL) while batch k is recorded."""
    tag = uuid.uuid4().hex[:6]
    boot, cmds = vote_commands(n_votes, tag=tag)
    keys = {c.node_id: c.vote_key for c in boot if isinstance(c, rules.AdmitMember)}
    # the recording node is a trustee (R13: it signs each append with its vote key)
    rec = Recorder(PostgresStore(dsn), EtcdGuard(endpoint, f"/bench/{tag}", "bench-node"), trustees(7)[0].signer)
    # each run has its own members and so its own cluster: use a fresh database per run
    Recorder(rec.store, rec.guard, OPERATOR).execute(boot)
    before = rec.store.last_position()
    batches = [cmds[i:i + batch] for i in range(0, len(cmds), batch)]
    t0 = time.perf_counter()
    if edge_thread:
        checked: queue.Queue = queue.Queue(maxsize=2)

        def edge() -> None:
            for b in batches:
                for c in b:
                    c.vote.verifies_under(keys[c.vote.vote.node_id])
                checked.put(b)

        threading.Thread(target=edge, daemon=True).start()
        for _ in batches:
            rec.execute(checked.get())
    else:
        for b in batches:
            rec.execute(b)
    dt = time.perf_counter() - t0
    events = rec.store.last_position() - before
    vote_events = sum(1 for r in rec.store.read_all(after=before, limit=10**7) if r.event_type == "VoteAccepted")
    rec.guard.close()
    rec.store.close()
    return {"batch": batch, "edge_thread": edge_thread, "votes": len(cmds),
            "vote_events_per_s": round(vote_events / dt), "events_per_s": round(events / dt), "seconds": round(dt, 2)}


def bench_arrivals(dsn: str, endpoint: str, n_votes: int, rate: float, max_batch: int = 500) -> dict:
    """Single votes arriving one by one, recorded as a node's worker records them (issue 15, group commit).

    A producer hands votes to a queue one at a time, ``rate`` per second (the gossip edge); the recording
    thread takes whatever has arrived (up to ``max_batch``), records it in one ``execute`` and starts again,
    so votes that arrive while an append is in flight share the next one. Each vote is acknowledged when
    its execute returns (durable in etcd and Postgres); its latency is arrival -> acknowledged.
    """
    tag = uuid.uuid4().hex[:6]
    boot, cmds = vote_commands(n_votes, tag=tag)
    rec = Recorder(PostgresStore(dsn), EtcdGuard(endpoint, f"/bench/{tag}", "bench-node"), trustees(7)[0].signer)
    Recorder(rec.store, rec.guard, OPERATOR).execute(boot)
    rec.catch_up()
    inbox: queue.Queue = queue.Queue()
    arrived: dict[int, float] = {}
    latency: list[float] = []
    batches: list[int] = []

    def produce() -> None:
        for i, c in enumerate(cmds):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            arrived[i] = time.perf_counter()
            inbox.put((i, c))

    t0 = time.perf_counter()
    threading.Thread(target=produce, daemon=True).start()
    done = 0
    while done < len(cmds):
        items = [inbox.get()]
        while len(items) < max_batch:
            try:
                items.append(inbox.get_nowait())
            except queue.Empty:
                break
        rec.execute([c for _, c in items])
        now = time.perf_counter()
        latency.extend(now - arrived[i] for i, _ in items)
        batches.append(len(items))
        done += len(items)
    dt = time.perf_counter() - t0
    rec.guard.close()
    rec.store.close()
    return {"offered_per_s": rate, "votes": len(cmds), "votes_per_s": round(len(cmds) / dt), "batches": len(batches),
            "mean_batch": round(len(cmds) / len(batches), 1), "p50_ms": round(pct(latency, 0.5) * 1000, 1),
            "p99_ms": round(pct(latency, 0.99) * 1000, 1)}


def bench_batch1(args: argparse.Namespace) -> dict:
    """Only the single-vote figures, runs interleaved (this box is shared): the full path at batch 1 (serial:
    one execute per vote, each waiting for the last), single votes arriving (group commit), and the
    eventsourcing recorder's single-event append."""
    out: dict = {"full_path_batch1": [], "arrivals": [], "eventsourcing_single": []}
    with Postgres(fsync=True) as pg, Etcd(size=1) as etcd:
        for _ in range(args.repeat):
            out["full_path_batch1"].append(bench_full_path(fresh_db(pg), etcd.endpoints[0], args.single_votes, 1))
            out["arrivals"].append(bench_arrivals(fresh_db(pg), etcd.endpoints[0], args.votes, args.arrival_rate))
            out["eventsourcing_single"].append(bench_eventsourcing(pg, args.single_votes, batched=False))
            print("round:", {k: v[-1] for k, v in out.items()}, flush=True)
    med = {k: median_of(v) for k, v in out.items()}
    es = med["eventsourcing_single"]["single_events_per_s"]
    out["summary"] = {
        "full_path_batch1_vote_events_per_s": med["full_path_batch1"]["vote_events_per_s"],
        "arrivals_votes_per_s": med["arrivals"]["votes_per_s"], "arrivals_mean_batch": med["arrivals"]["mean_batch"],
        "arrivals_p50_ms": med["arrivals"]["p50_ms"], "arrivals_p99_ms": med["arrivals"]["p99_ms"],
        "eventsourcing_single_events_per_s": es,
        "batch1_vs_eventsourcing": round(med["full_path_batch1"]["vote_events_per_s"] / es, 2),
        "arrivals_vs_eventsourcing": round(med["arrivals"]["votes_per_s"] / es, 2),
    }
    print("summary:", out["summary"], flush=True)
    return out


def sample_rows(n: int) -> list[NewEvent]:
    ts = trustees(7)
    out = []
    for k in range(n):
        x = ts[k % 7]
        sv = x.vote(f"raw_{k // 7}", 42)
        p = {"tx_id": f"raw_{k // 7}", "node_id": x.node_id, "value": 42, "vote": sv.to_json(),
             "author_peer": x.peer_id}
        out.append(NewEvent(f"tx:raw_{k // 7}", "VoteAccepted", 1, p, f"raw:{k}"))
    return out


def bench_raw(dsn: str, n: int) -> dict:
    rows = sample_rows(n)
    out = {}
    with psycopg.connect(dsn) as c:
        c.execute("CREATE TABLE IF NOT EXISTS raw_events (position bigint primary key, stream_id text, "
                  "stream_version int, event_type text, payload jsonb, idempotency_key text unique)")
        c.commit()
        for mode in ("executemany", "copy"):
            c.execute("TRUNCATE raw_events")
            c.commit()
            data = [(i + 1, e.stream_id, i % 7 + 1, e.event_type, canonical_json(e.payload).decode(),
                     f"{mode}:{e.idempotency_key}") for i, e in enumerate(rows)]
            t0 = time.perf_counter()
            for i in range(0, len(data), 500):  # same batching as the best full-path run
                chunk = data[i:i + 500]
                with c.cursor() as cur:
                    if mode == "copy":
                        with cur.copy("COPY raw_events FROM STDIN") as cp:
                            for r in chunk:
                                cp.write_row(r)
                    else:
                        cur.executemany("INSERT INTO raw_events VALUES (%s,%s,%s,%s,%s,%s)", chunk)
                c.commit()
            out[f"{mode}_rows_per_s"] = round(n / (time.perf_counter() - t0))
    return out


def bench_store(dsn: str, n: int) -> dict:
    """Our store alone appending the same pre-made events (as eventsourcing's recorder is measured):
    idempotency and version checks, the BLAKE3 chain, COPY; no decision, no signature, no etcd."""
    versions: dict[str, int] = {}
    units = []
    for e in sample_rows(n):
        v = versions.get(e.stream_id, 0)
        units.append(Unit({e.stream_id: v}, (e,)))
        versions[e.stream_id] = v + 1
    store = PostgresStore(dsn)
    t0 = time.perf_counter()
    for i in range(0, len(units), 500):
        store.append(units[i:i + 500], signer("bench"))
    dt = time.perf_counter() - t0
    store.close()
    return {"batched_500_events_per_s": round(n / dt)}


def bench_eventsourcing(pg: Postgres, n: int, batched: bool = True) -> dict:
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    name = f"es_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    ds = PostgresDatastore(name, "127.0.0.1", pg.port, "postgres", "")
    rec = PostgresApplicationRecorder(ds)
    rec.create_table()
    rows = sample_rows(n)
    ids = {}
    batch = []
    for e in rows:
        oid = ids.setdefault(e.stream_id, uuid.uuid4())
        ver = sum(1 for x in batch if x.originator_id == oid) + 1
        batch.append(StoredEvent(oid, ver, e.event_type, canonical_json(e.payload)))
    out = {}
    if batched:
        t0 = time.perf_counter()
        for i in range(0, len(batch), 500):
            rec.insert_events(batch[i:i + 500])
        out["batched_500_events_per_s"] = round(n / (time.perf_counter() - t0))
    single = [StoredEvent(uuid.uuid4(), 1, "VoteAccepted", canonical_json(e.payload)) for e in rows[:1000]]
    t0 = time.perf_counter()
    for s in single:
        rec.insert_events([s])
    out["single_events_per_s"] = round(len(single) / (time.perf_counter() - t0))
    ds.close()
    return out


def median_of(runs: list[dict]) -> dict:
    """One row from repeated runs: the median of every number (this box is shared and noisy)."""
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(r[k] for r in runs)
    out["runs"] = len(runs)
    return out


def bench_replication(votes: int, single_votes: int, repeat: int) -> dict:
    """The full path (decide + etcd CAS + append) with and without the wait for the synchronous standby.

    Fair by construction: both sides run on the same Patroni primary (same binaries, settings, fsync on, data
    checksums, disk, WAL), each on a fresh database; side A's sessions set ``synchronous_commit=local`` (the
    commit is flushed to the primary's disk and not waited on by the standby: a single server's durability),
    side B's keep ``on`` (the cluster's setting: the commit waits for the synchronous standby's flush). Runs
    alternate A B B A ... (this box is shared and noisy); each pair gives a ratio, the row their median.
    """
    out: dict = {"rows": []}
    with Etcd(size=1) as etcd, PatroniCluster(etcd.endpoints, fsync=True) as pc:
        for batch, n in ((1, single_votes), (100, votes // 4), (500, votes)):
            single, sync, ratios = [], [], []
            for k in range(repeat):
                order = ("local", "on") if k % 2 == 0 else ("on", "local")
                got = {}
                for mode in order:
                    dsn = f"{fresh_db(pc)} options='-c synchronous_commit={mode}'"
                    got[mode] = bench_full_path(dsn, etcd.endpoints[0], n, batch)
                single.append(got["local"])
                sync.append(got["on"])
                ratios.append(got["on"]["vote_events_per_s"] / got["local"]["vote_events_per_s"])
            a, b = median_of(single), median_of(sync)
            row = {"batch": batch, "votes": n, "single_vote_events_per_s": a["vote_events_per_s"],
                   "sync_replication_vote_events_per_s": b["vote_events_per_s"],
                   "ratio_sync_over_single": round(statistics.median(ratios), 2),
                   "pair_ratios": [round(r, 2) for r in ratios], "runs": repeat}
            out["rows"].append(row)
            print("synchronous_commit local vs on, same primary (full path):", row, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--votes", type=int, default=20_000)
    ap.add_argument("--single-votes", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; rows print the medians")
    ap.add_argument("--replication", action="store_true",
                    help="only: one server vs a Patroni cluster with synchronous replication (issue 17)")
    ap.add_argument("--arrival-rate", type=float, default=2000.0, help="--batch1: single votes offered per second")
    ap.add_argument("--batch1", action="store_true",
                    help="only the single-vote figures: full path at batch 1, single arrivals, eventsourcing single")
    args = ap.parse_args()
    if args.batch1:
        print(json.dumps(bench_batch1(args)))
        return
    if args.replication:
        print(json.dumps(bench_replication(args.votes, args.single_votes, args.repeat)))
        return
    rep = range(args.repeat)
    results: dict = {}
    results["decide_evolve"] = bench_pure(args.votes)
    print("decide+evolve:", results["decide_evolve"], flush=True)
    with Postgres(fsync=True) as pg, Etcd(size=1) as etcd:
        results["full_path"] = []
        for batch, votes, edge in ((1, args.single_votes, False), (100, args.votes, False),
                                   (500, args.votes, False), (500, args.votes, True)):
            r = median_of([bench_full_path(fresh_db(pg), etcd.endpoints[0], votes, batch, edge) for _ in rep])
            results["full_path"].append(r)
            print("full path (decide + etcd CAS + PG append):", r, flush=True)
        raw_dsn = fresh_db(pg).replace(f"user={db.APP_ROLE}", "user=postgres")
        results["raw_limit"] = median_of([bench_raw(raw_dsn, args.votes) for _ in rep])
        print("raw limit (plain table, batches of 500):", results["raw_limit"], flush=True)
        results["store"] = median_of([bench_store(fresh_db(pg), args.votes) for _ in rep])
        print("our store alone (PostgresStore.append, same events, batches of 500):", results["store"], flush=True)
        results["eventsourcing"] = median_of([bench_eventsourcing(pg, args.votes) for _ in rep])
        print("eventsourcing PostgresApplicationRecorder:", results["eventsourcing"], flush=True)
        # projection rebuild over a log of the full-path run's size
        dsn = fresh_db(pg)
        bench_full_path(dsn, etcd.endpoints[0], args.votes, 500)
        replays = [replay(dsn.replace(f"user={db.APP_ROLE}", "user=postgres")) for _ in rep]
        results["rebuild"] = median_of([{"events": r.events, "events_per_s": round(r.events_per_second),
                                         "digest_equal": r.equal} for r in replays])
        print("projection rebuild:", results["rebuild"], flush=True)
    best = max(r["vote_events_per_s"] for r in results["full_path"])
    summary = {
        "full_path_best_vote_events_per_s": best,
        "vs_raw_copy": round(best / results["raw_limit"]["copy_rows_per_s"], 2),
        "vs_raw_executemany": round(best / results["raw_limit"]["executemany_rows_per_s"], 2),
        "vs_eventsourcing_batched": round(best / results["eventsourcing"]["batched_500_events_per_s"], 2),
        "store_alone_events_per_s": results["store"]["batched_500_events_per_s"],
        "store_alone_vs_raw_copy": round(results["store"]["batched_500_events_per_s"]
                                         / results["raw_limit"]["copy_rows_per_s"], 2),
        "store_alone_vs_eventsourcing": round(results["store"]["batched_500_events_per_s"]
                                              / results["eventsourcing"]["batched_500_events_per_s"], 2),
    }
    results["summary"] = summary
    print("summary:", summary)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
