"""A CI-sized load point (seed 14.3): N=4 processes at 5 transactions/s, checked by the chaos invariants.

The figures (N=4 and 7 at several rates, CPU and RSS per process) come from ``bench/chaos_bench.py``;
here one small point proves the measuring path works and that going fast lost nothing.
"""

from __future__ import annotations

import pytest

from chaos.harness import ChaosEnv
from chaos.loadpoint import run_point

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_small_load_point(tmp_path):
    with ChaosEnv(tmp_path, etcd_size=1) as env:
        p = run_point(env, 4, 5.0, 20)
    print(p)
    assert p["invariants_held"] and p["settled"], p
    assert p["completed"] == 20 and p["votes"] == 80 and p["votes_lost"] == 0 and p["txs_lost"] == 0
    assert p["node_rss_mb_mean"] > 0 and p["e2e_p50_ms"] > 0


def test_an_environment_that_fails_to_start_leaves_no_server_running(tmp_path, monkeypatch):
    def broken(url: str) -> None:
        raise RuntimeError("migration failed")

    monkeypatch.setattr("chaos.harness.db.upgrade", broken)
    env = ChaosEnv(tmp_path, etcd_size=1)
    with pytest.raises(RuntimeError, match="migration failed"), env:
        pass
    assert not (env.pg.data_dir / "postmaster.pid").exists() and not env.pg.data_dir.exists()
    assert all(m.proc is None or m.proc.poll() is not None for m in env.etcd.members)
