"""The operator's command line on a real log: clear one-line errors, never a traceback; what `status` says.

Issue items: `tvote replay` / `tvote backup` with the service DSN printed raw psycopg tracebacks; `backup`
refused the comma-separated etcd endpoints the other commands take; `status` did not say t or whether a
quorum is possible and counted removed members; an operator command signed by a key the log never
admitted must be refused (R13).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import OPERATOR, Writers, admin, trustees

from events import rules
from events.postgres_store import PostgresStore
from node.p2p.identity import generate_key_file

pytestmark = pytest.mark.integration
TVOTE = [sys.executable, "-c", "from tvote.cli import app; app()"]


def tvote(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TVOTE, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def log(database):
    ts = trustees(5)
    w = Writers(PostgresStore(database.app_dsn), voter=ts[0])
    w.execute(admin(ts, 3)[1:])
    w.execute([x.receive("t1", 1) for x in ts[:3]])
    w.execute([rules.RemoveMember("node-5", "op", "retired")])
    yield w
    w.close()


def test_status_reads_the_log_and_says_t_quorum_and_lag(database, log):
    out = tvote("status", "--dsn", database.app_dsn)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "4 eligible of 4" in text  # the removed member is no longer counted
    assert "t = 3" in text and "quorum possible" in text
    assert "events behind" in text  # no projector ran: the projections lag the log, and it says so


def test_replay_and_backup_with_the_service_role_fail_cleanly(database, log, tmp_path):
    for args in (["replay", "--dsn", database.app_dsn], ["backup", str(tmp_path / "b"), "--dsn", database.app_dsn]):
        out = tvote(*args)
        assert out.returncode == 1, out
        assert "Traceback" not in out.stdout + out.stderr, out.stderr[-500:]
        assert "owner" in out.stdout, out.stdout


def test_backup_takes_a_list_of_etcd_endpoints_and_uses_one_that_answers(database, log, etcd_server, tmp_path):
    dead = "http://127.0.0.1:1"
    out = tvote("backup", str(tmp_path / "b"), "--dsn", database.owner_dsn, "--etcd",
                f"{dead},{etcd_server.endpoints[0]}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "b" / "etcd.snapshot.db").exists()


def test_an_operator_command_signed_by_a_key_the_log_never_admitted_is_refused(database, log, etcd_server,
                                                                                 etcd_prefix, tmp_path: Path):
    key = tmp_path / "mallory.key"
    generate_key_file(key)
    before = log.store.last_position()
    out = tvote("unban", "node-1", "--dsn", database.app_dsn, "--etcd", etcd_server.endpoints[0],
                "--etcd-prefix", etcd_prefix, "--operator", "mallory", "--reason", "why not",
                "--operator-key-file", str(key))
    assert out.returncode == 1 and "is not an admitted operator" in out.stdout, out.stdout + out.stderr
    assert log.store.last_position() == before
    # the real operator "op" (its key in a file) is obeyed
    real = tmp_path / "op.key"
    real.write_bytes(OPERATOR.key.encode())
    real.chmod(0o600)
    out = tvote("members", "remove", "node-4", "--dsn", database.app_dsn, "--etcd", etcd_server.endpoints[0],
                "--etcd-prefix", etcd_prefix, "--operator", "op", "--reason", "retired", "--threshold", "2",
                "--operator-key-file", str(real))
    assert out.returncode == 0, out.stdout + out.stderr


def test_configure_changes_only_the_settings_given(database, log, etcd_server, etcd_prefix, tmp_path: Path):
    real = tmp_path / "op.key"
    real.write_bytes(OPERATOR.key.encode())
    real.chmod(0o600)
    common = ["--dsn", database.app_dsn, "--etcd", etcd_server.endpoints[0], "--etcd-prefix", etcd_prefix,
              "--operator", "op", "--operator-key-file", str(real)]
    before = log.ledger.cluster.config
    out = tvote("configure", "--floor-ban-after", "3", *common)
    assert out.returncode == 0, out.stdout + out.stderr
    after = log.ledger.cluster.config
    assert after.floor_ban_after == 3 and after.threshold == before.threshold == 3
    assert (after.deadline_ms, after.silent_penalty) == (before.deadline_ms, before.silent_penalty)
    position = log.store.last_position()
    out = tvote("configure", "--threshold", "9", *common)  # more than the 4 eligible members
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert log.store.last_position() == position
