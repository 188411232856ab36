"""What following another node's appends costs a node, per append and per transaction (issue 15).

Every node reads, checks and decides again every append the others write (R13). A py-spy profile of
an N=10 trustee under load put ~37 % of its CPU there (``Recorder.catch_up``), and the scale model
counts it per append and per event. This bench measures that path alone, without gossip or a
cluster: N trustees' recorders append a transaction's N votes ``--per`` votes an append (each
transaction recorded by one of them), and a follower (the first trustee, which wrote none of them)
reads after every append, as a loaded node reads about one append a read. Its vote memo is cleared
before each read: a follower checks the votes it did not receive itself.

Printed per store (``memory``: the rows fed straight to the fold, the floor of the pure part;
``postgres``: ``PostgresStore.read_all`` then the fold, as a node does), CPU of this process:
read and fold per append, per row and per transaction. Asserts nothing.

Run: ``.venv/bin/python bench/follow_bench.py [--txs 100] [--per 2] [--nodes 10] [--json]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from helpers import OPERATOR, admin, trustees  # noqa: E402

import events.vote as vote_memo  # noqa: E402
from devstack.postgres import Postgres  # noqa: E402
from events.memory_store import MemoryStore  # noqa: E402
from events.postgres_store import PostgresStore  # noqa: E402
from recording.memory_guard import MemoryGuard, MemoryKeys  # noqa: E402
from recording.recorder import Recorder  # noqa: E402
from tvote import db  # noqa: E402


def measure(make_store, nodes: int, txs: int, per: int) -> dict[str, float]:
    keys, ts = MemoryKeys(), trustees(nodes)

    def recorder(signer) -> Recorder:
        return Recorder(make_store(), MemoryGuard(signer.writer, keys), signer)

    recorder(OPERATOR).execute(admin(ts, max(1, nodes * 2 // 3 + 1)))
    writers = [recorder(t.signer) for t in ts]
    follower = recorder(ts[0].signer)
    follower.catch_up()
    read_s = fold_s = 0.0
    appends = rows = 0
    for k in range(txs):
        w = writers[1 + k % (nodes - 1)] if nodes > 1 else writers[0]
        votes = [t.receive(f"tx{k}", 7, now=1000 + k) for t in ts]
        for i in range(0, nodes, per):
            w.execute(votes[i:i + per])
            vote_memo._VERIFIED.clear()  # the follower did not receive these votes
            t0 = time.process_time()
            got = follower.store.read_all(after=follower.follower.read, limit=5000)
            t1 = time.process_time()
            follower.follower.feed(got)
            t2 = time.process_time()
            read_s, fold_s = read_s + t1 - t0, fold_s + t2 - t1
            appends, rows = appends + 1, rows + len(got)
    total = read_s + fold_s
    return {"appends": appends, "rows": rows, "read_us_per_append": round(1e6 * read_s / appends),
            "fold_us_per_append": round(1e6 * fold_s / appends), "us_per_row": round(1e6 * total / rows),
            "ms_per_tx": round(1e3 * total / txs, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--txs", type=int, default=100)
    ap.add_argument("--per", type=int, default=2, help="votes per append")
    ap.add_argument("--json", action="store_true", help="one JSON line per store")
    a = ap.parse_args()
    out = {"memory": None, "postgres": None}
    shared = MemoryStore()
    out["memory"] = measure(lambda: shared, a.nodes, a.txs, a.per)
    pg = Postgres(fsync=False).start()
    try:
        pg.create_database("follow")
        db.upgrade(pg.url("follow"))
        out["postgres"] = measure(lambda: PostgresStore(pg.dsn("follow")), a.nodes, a.txs, a.per)
    finally:
        pg.destroy()
    for store, r in out.items():
        line = {"store": store, "nodes": a.nodes, "votes_per_append": a.per, **r}
        print(json.dumps(line) if a.json else
              f"{store:>8}: read {r['read_us_per_append']} us + fold {r['fold_us_per_append']} us per append, "
              f"{r['us_per_row']} us per row, {r['ms_per_tx']} ms per transaction "
              f"(N={a.nodes}, {a.per} votes an append, {r['rows']} rows)")


if __name__ == "__main__":
    main()
