"""Trustees on separate hosts of a test network, and a real partition of one of them (tests/netns/netcluster.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_a_cluster_across_hosts_reaches_consensus_and_a_partitioned_trustee_is_not_wronged():
    env = {**os.environ, "PYTHONPATH": f"{HERE.parents[1] / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, str(HERE / "netcluster.py")], capture_output=True, text=True, timeout=540,
                       env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    print(got)
    assert got["cut_off_cast"] == 503  # signed, kept, not in the log while cut off
