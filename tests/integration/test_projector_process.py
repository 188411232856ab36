"""The projector as an OS process: SIGKILL it mid-stream, restart it, and nothing is lost or doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from helpers import Writers, trustees

from events import rules
from events.postgres_store import PostgresStore
from projections.replay import replay

TVOTE = [sys.executable, "-c", "from tvote.cli import app; app()"]


def test_sigkill_mid_stream_then_restart_equals_replay(database):
    rec = Writers(PostgresStore(database.app_dsn))
    ts = trustees(5)
    rec.execute([rules.AdmitMember(x.node_id, x.vote_key, x.peer_id, "op") for x in ts])
    rec.execute([rules.Configure(4, "op")])
    cmds = [x.receive(f"tx_{k}", k, now=1) for k in range(600) for x in ts[:4]]
    for i in range(0, len(cmds), 400):
        rec.execute(cmds[i:i + 400])
    last = rec.store.last_position()
    rec.store.close()

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    p = subprocess.Popen([*TVOTE, "projector", "--dsn", database.app_dsn, "--batch", "50"], env=env)
    with psycopg.connect(database.app_dsn, autocommit=True) as c:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = c.execute("SELECT position FROM projector_tracking").fetchone()
            if row and row[0] > 200:
                break
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed_at = c.execute("SELECT position FROM projector_tracking").fetchone()[0]
    assert 0 < killed_at < last, "the kill should land mid-stream"

    out = subprocess.run([*TVOTE, "projector", "--dsn", database.app_dsn, "--once"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = replay(database.owner_dsn)
    assert report.equal, report.differing_tables
    with psycopg.connect(database.app_dsn) as c:
        assert c.execute("SELECT sum(count) FROM vote_counts").fetchone()[0] == 2400
        assert c.execute("SELECT count(*) FROM vote_history").fetchone()[0] == 2400


def test_replay_pauses_a_running_projector_instead_of_waiting_forever(database):
    rec = Writers(PostgresStore(database.app_dsn))
    ts = trustees(3)
    rec.execute([rules.AdmitMember(x.node_id, x.vote_key, x.peer_id, "op") for x in ts])
    rec.execute([rules.Configure(2, "op")])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    p = subprocess.Popen([*TVOTE, "projector", "--dsn", database.app_dsn, "--batch", "10"], env=env)
    try:
        for k in range(30):  # the log keeps growing while we replay
            rec.execute([x.receive(f"tx_{k}", k, now=1) for x in ts])
        report = replay(database.owner_dsn)
        assert report.equal, report.differing_tables
        assert p.poll() is None, "the live projector must survive a replay"
    finally:
        p.terminate()
        p.wait(10)
        rec.store.close()
