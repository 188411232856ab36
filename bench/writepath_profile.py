"""Where one single-vote ``Recorder.execute`` spends its time (issue 15: the write path at batch 1).

Real Postgres (fsync on, synchronous_commit on) and a one-member etcd on disk, as ``append_bench``
starts them. Every phase of ``execute`` is timed (the leading catch-up read, the decision, the etcd
claim, the Postgres append, the trailing catch-up read), every Postgres round trip is counted by its
kind (BEGIN, a statement, COPY, COMMIT) and every etcd call; the table gives the mean per vote.

Run: ``PYTHONPATH=src .venv/bin/python bench/writepath_profile.py --votes 2000`` (``--json``: one line).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [*filter(None, __import__("os").environ.get("PYTHONPATH", "").split(":")), str(ROOT / "src"),
                str(ROOT / "tests"), str(ROOT / "bench")]

import psycopg  # noqa: E402
from helpers import OPERATOR, admin, trustees  # noqa: E402

from devstack.etcd import Etcd  # noqa: E402
from devstack.postgres import Postgres  # noqa: E402
from events.postgres_store import PostgresStore  # noqa: E402
from recording.etcd_guard import EtcdGuard  # noqa: E402
from recording.recorder import Recorder  # noqa: E402
from tvote import db  # noqa: E402


def vote_commands(n_votes: int, n: int = 7, tag: str = "") -> tuple[list, list]:
    """As ``append_bench.vote_commands`` (not imported: it puts this tree's src first, and --ab runs another)."""
    ts = trustees(n)
    cmds = [x.receive(f"tx{tag}_{k}", 42, now=1) for k in range(n_votes // n + 1) for x in ts]
    return admin(ts, 5), cmds[:n_votes]


class Clock:
    """Seconds and calls per label; nested labels are timed on their own (not subtracted)."""

    def __init__(self) -> None:
        self.s: dict[str, float] = collections.defaultdict(float)
        self.n: dict[str, int] = collections.defaultdict(int)

    def wrap(self, owner: object, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.s[label] += time.perf_counter() - t0
                self.n[label] += 1

        setattr(owner, name, timed)


def pg_kind(query: object) -> str:
    q = str(query).strip().split()[0].upper() if str(query).strip() else "?"
    text = str(query)
    if "pg_advisory_xact_lock" in text:
        return "pg.lock"
    if "INSERT INTO events" in text:
        return "pg.insert_rows"
    if "ORDER BY position DESC LIMIT 1" in text:
        return "pg.last_row (+ versions)"
    if "unnest" in text:
        return "pg.stream_versions"
    if "WHERE position >" in text:
        return "pg.read_after"
    return f"pg.{q.lower()}"


def instrument(rec: Recorder, clock: Clock) -> None:
    """Time the recorder's phases, the store's round trips and the guard's etcd calls."""
    clock.wrap(rec, "catch_up", "recorder.catch_up")
    clock.wrap(rec, "_decide", "recorder.decide")
    clock.wrap(rec, "_verify_ahead", "recorder.verify_ahead")
    clock.wrap(rec.guard, "claim", "etcd.claim (txn)")
    clock.wrap(rec.store, "append", "pg.append (whole)")
    clock.wrap(rec.store, "read_all", "pg.read_all (whole)")
    clock.wrap(rec.guard.client, "transaction", "etcd.txn calls")
    clock.wrap(rec.guard.client, "get", "etcd.get calls")
    conn = rec.store._connection()
    pgconn = conn.pgconn
    # every libpq round trip psycopg makes goes through these (BEGIN is sent as its own query)
    orig_exec = pgconn.__class__

    def count_exec(cls_fn, kind_of):
        def f(self_, *a, **kw):
            t0 = time.perf_counter()
            try:
                return cls_fn(self_, *a, **kw)
            finally:
                label = kind_of(a)
                clock.s[label] += time.perf_counter() - t0
                clock.n[label] += 1
        return f

    del orig_exec
    cur_cls = psycopg.Cursor
    orig_execute = cur_cls.execute
    cur_cls.execute = count_exec(orig_execute, lambda a: pg_kind(a[0]))  # type: ignore[method-assign]
    conn_cls = psycopg.Connection
    orig_commit = conn_cls.commit
    conn_cls.commit = count_exec(orig_commit, lambda a: "pg.commit")  # type: ignore[method-assign]
    orig_copy = cur_cls.copy
    cur_cls.copy = count_exec(orig_copy, lambda a: "pg.copy (open)")  # type: ignore[method-assign]


def profile(dsn: str, endpoint: str, n_votes: int, patch=None) -> dict:
    tag = uuid.uuid4().hex[:6]
    boot, cmds = vote_commands(n_votes, tag=tag)
    rec = Recorder(PostgresStore(dsn), EtcdGuard(endpoint, f"/prof/{tag}", "bench-node"), trustees(7)[0].signer)
    Recorder(rec.store, rec.guard, OPERATOR).execute(boot)
    rec.catch_up()
    for c in cmds[:50]:  # warm up (connections, plans, caches)
        rec.execute([c])
    clock = Clock()
    instrument(rec, clock)
    # count BEGINs: psycopg sends one per transaction from a connection's first statement
    conn = rec.store._connection()
    begins = collections.Counter()
    conn.add_notice_handler(lambda d: None)
    todo = cmds[50:]
    t0 = time.perf_counter()
    for c in todo:
        t1 = time.perf_counter()
        rec.execute([c])
        clock.s["execute (whole)"] += time.perf_counter() - t1
        clock.n["execute (whole)"] += 1
    dt = time.perf_counter() - t0
    del begins
    rec.guard.close()
    rec.store.close()
    n = len(todo)
    rows = {k: {"calls_per_vote": round(clock.n[k] / n, 2), "ms_per_vote": round(clock.s[k] / n * 1000, 3),
                "ms_per_call": round(clock.s[k] / max(1, clock.n[k]) * 1000, 3)} for k in sorted(clock.s)}
    return {"votes": n, "votes_per_s": round(n / dt), "ms_per_vote": round(dt / n * 1000, 3), "phases": rows}


def ab(base_src: str, votes: int, rounds: int) -> dict:
    """Interleaved A/B on one Postgres and one etcd: ``base_src`` (A) and this tree (B) alternate, each run in
    its own process on a fresh database (this box is shared: only interleaved runs compare)."""
    import subprocess
    here = str(ROOT / "src")
    out: dict = {"A": [], "B": []}
    with Postgres(fsync=True) as pg, Etcd(size=1) as etcd:
        for k in range(rounds):
            for side in (("A", "B") if k % 2 == 0 else ("B", "A")):
                name = f"p{uuid.uuid4().hex[:8]}"
                pg.create_database(name)
                db.upgrade(pg.url(name))
                env = {**__import__("os").environ, "PYTHONPATH": base_src if side == "A" else here}
                got = subprocess.run([sys.executable, __file__, "--json", "--votes", str(votes), "--dsn",
                                      pg.dsn(name, user=db.APP_ROLE), "--endpoint", etcd.endpoints[0]],
                                     env=env, capture_output=True, text=True, check=True)
                out[side].append(json.loads(got.stdout.strip().splitlines()[-1]))
    a = sorted(r["votes_per_s"] for r in out["A"])
    b = sorted(r["votes_per_s"] for r in out["B"])
    out["median_votes_per_s"] = {"A": a[len(a) // 2], "B": b[len(b) // 2]}
    out["ratios"] = [round(y["votes_per_s"] / x["votes_per_s"], 2) for x, y in zip(out["A"], out["B"], strict=True)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--votes", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dsn", help="use this database (and --endpoint) instead of starting services")
    ap.add_argument("--endpoint")
    ap.add_argument("--ab", metavar="BASE_SRC", help="interleave runs of BASE_SRC (A) and this tree (B)")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    if args.ab:
        res = ab(args.ab, args.votes, args.rounds)
        for side in ("A", "B"):
            for r in res[side]:
                print(side, r["votes_per_s"], "votes/s", {k: v["ms_per_vote"] for k, v in r["phases"].items()})
        print(json.dumps({"median_votes_per_s": res["median_votes_per_s"], "ratios_B_over_A": res["ratios"]}))
        return
    if args.dsn:
        out = profile(args.dsn, args.endpoint, args.votes)
    else:
        with Postgres(fsync=True) as pg, Etcd(size=1) as etcd:
            name = f"p{uuid.uuid4().hex[:8]}"
            pg.create_database(name)
            db.upgrade(pg.url(name))
            out = profile(pg.dsn(name, user=db.APP_ROLE), etcd.endpoints[0], args.votes)
    if args.json:
        print(json.dumps(out))
        return
    print(f"{out['votes']} single-vote executes: {out['votes_per_s']}/s, {out['ms_per_vote']} ms each")
    print(f"{'phase':32} {'calls/vote':>10} {'ms/vote':>9} {'ms/call':>9}")
    for k, r in out["phases"].items():
        print(f"{k:32} {r['calls_per_vote']:>10} {r['ms_per_vote']:>9} {r['ms_per_call']:>9}")


if __name__ == "__main__":
    main()
