"""`tvote up`, the README's main command, end to end as a user runs it; and its bad flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

SRC = Path(__file__).resolve().parents[2] / "src"
TVOTE = [sys.executable, "-c", "from tvote.cli import app; app()"]


def run(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([*TVOTE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200"})


def our_children() -> set[str]:
    names = {"postgres", "etcd", "anvil"}
    return {p.info["name"] for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] in names and "tvote" in " ".join(p.info["cmdline"] or [])}


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
