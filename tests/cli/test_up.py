"""`tvote up`, the README's main command, end to end as a user runs it; and its bad flags."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
TVOTE = [sys.executable, "-c", "from tvote.cli import app; app()"]


# Everything `up` starts inherits this TMPDIR and puts its own directories under it, so what a test
# left behind is found by that mark alone, not by process names shared with other runs on the box.
MARK = tempfile.mkdtemp(prefix="tvote-uptest-")
os.chmod(MARK, 0o1777)  # as /tmp: the postgres user must reach the data dirs made under it


def run(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([*TVOTE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200", "TMPDIR": MARK})


def our_children() -> set[int]:
    """Processes one of this module's `up` runs started (Postgres, Patroni, etcd, anvil, nodes) still alive."""
    found = set()
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and (MARK in " ".join(p.info["cmdline"] or [])
                                         or p.environ().get("TMPDIR") == MARK):
                found.add(p.pid)
    return found


def test_up_runs_the_whole_system_and_leaves_nothing_running():
    before = our_children()
    r = run("up", "--transactions", "6", "--nodes", "4", "--threshold", "3", "--byzantine", "double")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "CONFIRMED" in out and "ABORTED_BYZANTINE" in out
    assert "DOUBLE_VOTING" in out
    assert "each consensus written once" in out
    assert "audit verify: OK" in out and "projections equal" in out
    assert our_children() <= before  # postgres, etcd, anvil and the nodes are gone


def test_bad_flags_get_a_one_line_error_and_start_nothing():
    r = run("up", "--nodes", "3", "--threshold", "4")
    assert r.returncode == 1 and "need 1 <= t <= N" in r.stdout
    r = run("up", "--byzantine", "sneaky")
    assert r.returncode == 1 and "--byzantine must be one of" in r.stdout
    r = run("status", "--dsn", "host=127.0.0.1 port=1 dbname=x user=y")
    assert r.returncode == 1 and "cannot reach Postgres" in r.stdout
    r = run("up", "--nodes", "0")
    assert r.returncode == 2  # typer's own usage error


@pytest.mark.slow
def test_up_on_a_patroni_cluster_runs_the_same_scenario_and_leaves_nothing_running():
    """Issue 17: `up --postgres patroni`: three Postgres members under Patroni, every role through the multi-host
    DSN, the same verdicts, chain and audit as on one server."""
    before = our_children()
    r = run("up", "--postgres", "patroni", "--transactions", "6", "--nodes", "4", "--threshold", "3",
            "--byzantine", "double")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "target_session_attrs=read-write" in out and "sync_standby" in out
    assert "CONFIRMED" in out and "ABORTED_BYZANTINE" in out
    assert "each consensus written once" in out
    assert "audit verify: OK" in out and "projections equal" in out
    assert our_children() <= before


def test_up_refuses_a_postgres_it_does_not_know_and_patroni_with_a_data_dir(tmp_path):
    r = run("up", "--postgres", "mysql")
    assert r.returncode == 1 and "--postgres must be embedded or patroni" in r.stdout
    r = run("up", "--postgres", "patroni", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1 and "keeps no data dir yet" in r.stdout, r.stdout
    assert not (tmp_path / "d").exists()  # nothing made


def test_up_starts_again_on_its_data_dir_and_refuses_another_clusters():
    """Issue 14: `up --data-dir D` twice: same ports, keys, log and chain; a data dir of another shape, a chain
    older than the log and a chain lost are refused."""
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="tvote-up-", dir="/var/tmp"))
    home.chmod(0o711)  # the postgres user must reach the data dir (pytest's tmp_path is private to root)
    try:
        _run_twice(home / "d")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_data_dir_the_postgres_user_cannot_reach_is_refused_in_one_line(tmp_path):
    if os.geteuid() != 0:
        return  # only root hands the server to the postgres user
    r = run("up", "--transactions", "1", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1 and "cannot reach" in r.stdout and "Traceback" not in r.stdout + r.stderr, r.stdout


def _on_chain(out: str) -> int:
    import re

    found = re.search(r"on chain: (\d+) values recorded", out)
    assert found, out[-3000:]
    return int(found.group(1))


def _run_twice(data: Path) -> None:
    """The first run bans its double-voting member, so the second starts with a banned trustee in the log:
    its peers refuse it, it is never ready, and the cluster must start (and decide) without it."""
    before = our_children()
    flags = ["--transactions", "3", "--nodes", "3", "--threshold", "2", "--byzantine", "double",
             "--deadline-ms", "2000", "--data-dir", str(data)]
    first = run("up", *flags)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "ABORTED_BYZANTINE" in first.stdout and "DOUBLE_VOT" in first.stdout
    recorded = _on_chain(first.stdout)
    assert recorded >= 1
    assert our_children() <= before
    old_chain = (data / "anvil.json").read_bytes()  # the chain as the first run left it
    second = run("up", *flags)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "start 2" in second.stdout
    # the first run's chain and log were kept; the banned member stays banned, the other two decide all three
    assert _on_chain(second.stdout) == recorded + 3, second.stdout[-3000:]
    assert "r2_tx_0000" in second.stdout  # the hint names this run's transactions
    assert "audit verify: OK" in second.stdout and "projections equal" in second.stdout
    assert our_children() <= before

    other = run("up", *[f if f != "3" else "4" for f in flags])  # --nodes 4 (and 4 transactions)
    assert other.returncode == 1 and "holds a cluster of N=3 t=2" in other.stdout, other.stdout[-2000:]
    (data / "anvil.json").write_bytes(old_chain)  # an older copy of the chain: the log's last 3 records missing
    stale = run("up", *flags)
    assert stale.returncode == 1 and "lacks the log's last confirmed record" in stale.stdout, stale.stdout[-2000:]
    assert our_children() <= before
    (data / "anvil.json").unlink()  # the chain lost: the log names a contract that is not there
    lost = run("up", *flags)
    assert lost.returncode == 1 and "has no contract at" in lost.stdout, lost.stdout[-2000:]
    assert our_children() <= before
