"""Network chaos on the namespace network, CI-sized (issue 18 item 5): the seed's partition (N=8, t=5, split
5 | 3, the stores with the 5: the 5 continue, the 3 wait and catch up after the heal). It is
``chaos.scenarios.run`` (fresh log, load, ``chaos.invariants``) with a chain and a submitter, run by
``python -m chaos.netchaos`` in a process of its own (it enters the operator's namespace before any gRPC
thread exists). The full sizes and the other network faults: ``bench/chaos_bench.py --netns``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SRC = Path(__file__).resolve().parents[2] / "src"
# The others (a trustee cut from its peers, 20 % packet loss: 185-206 s at bench size, the one-way cut, tbf,
# the etcd leader's isolation, the split with the stores on both sides) run in the bench (bench/RESULTS.md)
# to keep CI's time: this one took 2-4 min on the shared 2 cores, the cut from peers ~1 more.
CI = ["net split 5|3 (N=8 t=5), stores with the 5"]


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    r = subprocess.run([sys.executable, "-m", "chaos.netchaos", "--only", *CI], capture_output=True, text=True,
                       timeout=840, env={**os.environ, "PYTHONPATH": str(SRC)})
    print(r.stdout[-6000:], r.stderr[-3000:])
    rows = [json.loads(line.removeprefix("RESULT ")) for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(rows) == len(CI), r.stdout[-3000:] + r.stderr[-3000:]
    return {row["scenario"]: row for row in rows}


@pytest.mark.parametrize("name", CI)
def test_network_fault_holds(results, name):
    row = next(v for k, v in results.items() if name in k)
    print(row)
    assert row["error"] is None, row
    assert row["held_bool"], row["failed"]
    assert row["votes_lost_n"] == 0 and row["txs_lost_n"] == 0, row
    assert row["confirmed"] > 0 and row["writes_per_consensus"] == 1, row  # each consensus once on chain
    assert row["recovery"] is not None, row  # the backlog settled on every honest node after the heal
