"""Trustees behind NATs vote through a relay run by another trustee; a ban reaches them (tests/netns/natcluster.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_trustees_behind_nats_learn_it_reserve_on_a_member_relay_vote_through_it_and_get_the_ban():
    env = {**os.environ, "PYTHONPATH": f"{HERE.parents[1] / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, str(HERE / "natcluster.py")], capture_output=True, text=True, timeout=540,
                       env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    print(got)
    assert got["reachability"][1:] == [1, 2, 2]  # trustee-2 public, trustee-3 and -4 private (AutoNAT)
    assert sum(got["relayed_dials"]) >= 1
    assert got["x_status"] == "ABORTED_BYZANTINE"
