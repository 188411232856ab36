"""Signer (R14) latency: what journaling every signature (SQLite WAL, synchronous=FULL) adds per call.

Prints numbers; asserts nothing. The journal lives on the disk under ``--dir`` (default: a temp
dir under /tmp, the machine's real disk; never /dev/shm, which would hide the fsync).
Run: ``.venv/bin/python bench/signer_bench.py [--calls 300]``.

- sign_many of 1 and of 100 new ballots: p50/p99 ms per call (one commit = one fsync each)
- the same ballots signed in memory only (``events.vote.sign``): the cost without the journal
- a retry of 100 already-signed ballots (no fsync: a read; rows not in the signer's cache of
  verified rows are verified again, ~60 us each)
- opening a journal of N votes (every row is re-verified at open): votes/s
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

import nacl.signing  # noqa: E402

from events.vote import Vote, sign  # noqa: E402
from node.signer import Signer  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def show(name: str, ms: list[float]) -> None:
    print(f"{name:<52} p50 {statistics.median(ms):7.3f} ms   p99 {pct(ms, 99):7.3f} ms   (n={len(ms)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--open-rows", type=int, default=100_000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="signer-bench-", dir=args.dir))
    key = nacl.signing.SigningKey.generate()
    try:
        with Signer.open(root / "journal", key, "bench-node", create=True) as s:
            n = 0
            for batch in (1, 100):
                ms, mem = [], []
                for _ in range(args.calls):
                    ballots = [(f"tx-{n + i}", 7) for i in range(batch)]
                    n += batch
                    t0 = time.perf_counter()
                    s.sign_many(ballots, 1_700_000_000_000)
                    ms.append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    for tx, v in ballots:
                        sign(Vote(tx, v, "bench-node", 1_700_000_000_000), key)
                    mem.append((time.perf_counter() - t0) * 1000)
                show(f"sign_many, {batch} new ballot(s), journaled", ms)
                show("same, signed in memory only (no journal)", mem)
            first = args.calls  # the 100-ballot batches start after the 1-ballot calls
            for label, cold in (("in the verified cache", False), ("each row verified again", True)):
                retry = []
                for c in range(args.calls - min(args.calls, 300), args.calls):  # the latest batches
                    ballots = [(f"tx-{first + c * 100 + i}", 7) for i in range(100)]
                    if cold:
                        s._journal._known.clear()  # diagnostic only: as if read back long after it was written
                    t0 = time.perf_counter()
                    s.sign_many(ballots, 1_700_000_000_001)
                    retry.append((time.perf_counter() - t0) * 1000)
                show(f"retry of 100 signed ballots, {label}", retry)
            while n < args.open_rows:
                s.sign_many([(f"tx-{n + i}", 7) for i in range(1000)], 1_700_000_000_000)
                n += 1000
            rows = s.journal_size()
        t0 = time.perf_counter()
        Signer.open(root / "journal", key, "bench-node").close()
        dt = time.perf_counter() - t0
        print(f"open + verify a journal of {rows} votes: {dt:.2f} s ({rows / dt:,.0f} votes/s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
