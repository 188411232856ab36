"""Submission benchmark (issue 6): threshold-reached -> confirmed latency and submissions/s on anvil automine,
against the bare web3 send-and-wait loop (``bench/chain_baseline.py``, the limit) in the same run.

Prints JSON lines; asserts nothing. Services: Postgres with fsync=on and synchronous_commit=on, etcd on
disk, one automining anvil per measurement (anvil slows down as its chain grows, so no phase inherits
another's chain). The submitter runs as its own OS process (``python -m submitter``), as in production;
consensus is produced by a Recorder in this process from trustees' signed votes (N=3, t=2).

Latency is measured on the log itself: ``recorded_at`` of SubmissionConfirmed minus that of
ThresholdReached, per transaction; so it includes the submitter noticing the consensus, the lock, the
four log appends (Started, Signed, Broadcast, Confirmed), signing, the broadcast and the receipt.

- ``paced``: consensus offered at a fixed rate for a few seconds; achieved confirmations/s, p50/p99;
- ``burst``: many consensus transactions at once; sustained submissions/s while draining the backlog;
- ``baseline``: bare web3 sign/send/wait loop, one transaction at a time (and through the client);
- ``breakdown``: one transaction at a time through an in-process Submitter, time per step (ms/tx),
  to show where the latency goes (the three fenced log appends dominate).

Run: ``.venv/bin/python bench/submit_bench.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from chain_baseline import measure  # noqa: E402  (bench/chain_baseline.py, beside this file)
from eth_account import Account  # noqa: E402
from helpers import Writers, admin, trustees  # noqa: E402

from chain import ThresholdRecordClient, make_web3  # noqa: E402
from devstack.anvil import Anvil  # noqa: E402
from devstack.etcd import Etcd  # noqa: E402
from devstack.postgres import Postgres  # noqa: E402
from events import rules  # noqa: E402
from events.postgres_store import PostgresStore  # noqa: E402
from recording.etcd_guard import EtcdGuard  # noqa: E402
from submitter.identity import log_signer  # noqa: E402
from tvote import db  # noqa: E402

N, T = 3, 2


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


class Setup:
    """A fresh log (database + etcd prefix), a fresh anvil with the contract, and a submitter process."""

    def __init__(self, pg: Postgres, etcd_endpoint: str, workdir: Path, tag: str) -> None:
        name = f"sb_{tag}"
        pg.create_database(name)
        db.upgrade(pg.url(name))
        self.dsn = pg.dsn(name, user=db.APP_ROLE)
        self.prefix = f"/bench/{tag}"
        self.endpoint = etcd_endpoint
        self.members = trustees(N)
        recording = trustees(N + 1)[N]  # a member that only records (R13: a trustee's node writes votes)
        self.rec = Writers(PostgresStore(self.dsn), voter=recording,
                           guard=lambda w: EtcdGuard(etcd_endpoint, self.prefix, w.replace(":", "-")))
        self.guard = self.rec.guard
        self.rec.execute(admin([*self.members, recording], T, deadline_ms=3_600_000)[1:])
        self.anvil = Anvil(log_path=workdir / f"anvil-{tag}.log")
        self.anvil.start()
        owner = Account.from_key(self.anvil.private_key(0))
        sub = Account.from_key(self.anvil.private_key(1))
        self.client = ThresholdRecordClient.deploy(make_web3(self.anvil.url), owner, [sub.address],
                                                   chain_id=self.anvil.chain_id)
        key_file = workdir / f"key-{tag}"
        key_file.write_text(self.anvil.private_key(1))
        sub_log = log_signer(f"bench-sub-{tag}", self.anvil.private_key(1))
        self.rec.op.execute([rules.AdmitWriter(sub_log.writer, "submitter", sub_log.public_key, "op")])
        self.log = open(workdir / f"submitter-{tag}.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "submitter", "--dsn", self.dsn, "--etcd", etcd_endpoint, "--etcd-prefix",
             self.prefix, "--rpc", self.anvil.url, "--contract", self.client.address, "--key-file", str(key_file),
             "--chain-id", str(self.anvil.chain_id), "--confirmations", "0", "--name", f"bench-sub-{tag}"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        self.seq = 0

    def consensus(self, count: int) -> list[str]:
        ids = [f"tx_{self.seq + i}" for i in range(count)]
        self.seq += count
        now = int(time.time() * 1000)
        self.rec.execute([m.receive(t, 1000 + i, now=now) for i, t in enumerate(ids) for m in self.members[:T]])
        return ids

    def confirmed(self) -> int:
        self.rec.catch_up()
        return sum(1 for tx in self.rec.ledger.txs.values() if tx.status == rules.CONFIRMED)

    def wait_all(self, total: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.confirmed() < total:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"only {self.confirmed()}/{total} confirmed; see the submitter log")
            time.sleep(0.02)

    def latencies(self, tx_ids: list[str]) -> tuple[list[float], float]:
        """Per-tx ms from ThresholdReached to SubmissionConfirmed, and the span first reached -> last confirmed."""
        reached: dict[str, int] = {}
        done: dict[str, int] = {}
        pos = 0
        while True:
            rows = self.rec.store.read_all(after=pos, limit=5000)
            for r in rows:
                if r.event_type == "ThresholdReached":
                    reached[r.payload["tx_id"]] = r.recorded_at_us
                elif r.event_type == "SubmissionConfirmed":
                    done[r.payload["tx_id"]] = r.recorded_at_us
            if len(rows) < 5000:
                break
            pos = rows[-1].position
        lat = [(done[t] - reached[t]) / 1000 for t in tx_ids]
        span = (max(done[t] for t in tx_ids) - min(reached[t] for t in tx_ids)) / 1e6
        return lat, span

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.rec.close()
        self.anvil.close()


def warm_up(s: Setup) -> None:
    s.consensus(20)
    s.wait_all(20, 60)


def paced(s: Setup, rate: float, seconds: float) -> dict:
    warm_up(s)
    base = s.confirmed()
    ids: list[str] = []
    t0 = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        target = t0 + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        ids += s.consensus(1)
    s.wait_all(base + n, 120)
    lat, span = s.latencies(ids)
    return {"phase": "paced", "offered_per_s": rate, "count": n, "confirmed_per_s": round(n / span, 1),
            "latency_ms_p50": round(pct(lat, 0.5), 1), "latency_ms_p99": round(pct(lat, 0.99), 1),
            "latency_ms_max": round(max(lat), 1)}


def burst(s: Setup, count: int) -> dict:
    warm_up(s)
    base = s.confirmed()
    ids: list[str] = []
    for _ in range(0, count, 250):
        ids += s.consensus(min(250, count - len(ids)))
    s.wait_all(base + count, 300)
    lat, span = s.latencies(ids)
    return {"phase": "burst", "count": count, "submissions_per_s": round(count / span, 1),
            "latency_ms_p50": round(pct(lat, 0.5), 1), "latency_ms_p99": round(pct(lat, 0.99), 1),
            "drain_s": round(span, 2)}


def breakdown(s: Setup, count: int) -> dict:
    """Sequential single transactions through an in-process Submitter; wall time per step per tx."""
    import collections
    import functools

    from submitter.core import Submitter

    s.proc.terminate()
    s.proc.wait(15)
    guard = EtcdGuard(s.endpoint, s.prefix, "bd")
    sub = Submitter(PostgresStore(s.dsn), guard, s.client, Account.from_key(s.anvil.private_key(1)), name="bd")
    spent: collections.Counter[str] = collections.Counter()

    def wrap(obj: object, name: str, label: str) -> None:
        fn = getattr(obj, name)

        @functools.wraps(fn)
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t0

        setattr(obj, name, timed)

    wrap(sub.recorder, "execute", "log append (etcd CAS + PG commit)")
    wrap(sub.recorder, "catch_up", "log follow")
    wrap(sub.locks, "acquire", "etcd lock")
    wrap(sub.locks, "release", "etcd unlock")
    wrap(sub.nonces, "reserve", "etcd nonce CAS")
    for name in ("send_raw", "get_receipts", "pending_nonce", "suggest_fees"):
        wrap(sub.client, name, f"rpc {name}")
    wrap(sub.client, "sign_record", "sign (eth-account)")
    lat = []
    try:
        while sub.run_once():
            pass
        spent.clear()
        for i in range(count):
            s.consensus(1)
            t0 = time.perf_counter()
            while sub.stats["confirmed"] < i + 1:
                sub.run_once()
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        sub.close()
        guard.close()
    per_tx = {k: round(v / count * 1000, 2) for k, v in spent.most_common()}
    return {"phase": "breakdown", "count": count, "latency_ms_p50": round(pct(lat, 0.5), 1),
            "latency_ms_p99": round(pct(lat, 0.99), 1), "ms_per_tx": per_tx}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short phases")
    ap.add_argument("--rates", default="20,50,100", help="paced offered rates (consensus/s)")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--baseline-count", type=int, default=300)
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.burst, args.baseline_count = 3.0, 300, 150
    workdir = Path(tempfile.mkdtemp(prefix="submit-bench-"))
    print(json.dumps({"cpus": os.cpu_count(), "workdir": str(workdir)}), flush=True)
    with Postgres(fsync=True) as pg, Etcd(size=1) as etcd:
        endpoint = f"127.0.0.1:{etcd.members[0].client_port}"
        for rate in [float(r) for r in args.rates.split(",")]:
            s = Setup(pg, endpoint, workdir, uuid.uuid4().hex[:6])
            try:
                print(json.dumps(paced(s, rate, args.seconds)), flush=True)
            finally:
                s.close()
        s = Setup(pg, endpoint, workdir, uuid.uuid4().hex[:6])
        try:
            print(json.dumps(burst(s, args.burst)), flush=True)
        finally:
            s.close()
        s = Setup(pg, endpoint, workdir, uuid.uuid4().hex[:6])
        try:
            print(json.dumps(breakdown(s, 50 if args.quick else 200)), flush=True)
        finally:
            s.close()
    for mode in ("bare", "client"):
        with Anvil(log_path=workdir / f"anvil-baseline-{mode}.log") as node:
            result = measure(node.url, args.baseline_count, mode)
        print(json.dumps({"phase": "baseline", **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
