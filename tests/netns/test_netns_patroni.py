"""The Patroni primary cut off by the network under an append load, nothing acknowledged lost (issue 17 item 3).

The cut is real (``TestNetwork.isolate``: iptables DROP both ways, the old primary's processes run on), not the
SIGSTOP approximation of tests/ha. ``python -m chaos.pg_netns`` runs it in a process of its own (it enters the
``app`` host before any gRPC thread exists) and prints one ``RESULT`` line; this test checks its verdict and
figures, then that nothing of the run is left: namespaces, state file, tasks inside them (and with them veths,
bridge, iptables rules), Patroni or Postgres processes, the run's directory.

With ``wal_sender_timeout=5s`` on the members: Patroni demotes a cut-off primary by a fast shutdown, which waits
for its walsenders to send the last WAL to standbys it cannot reach; with the default 60 s that shutdown lasts
until the heal, and Patroni 3.0.4 then raced itself (a second demotion "from the main thread", two postmasters,
a failed pg_rewind, the data directory re-cloned) and took 68-76 s to rejoin, past CI's time. The default's
path is the bench's row (``bench/chaos_bench.py --patroni``, docs/decisions.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nethelpers import leftovers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SRC = Path(__file__).resolve().parents[2] / "src"


def _processes_under(base: str) -> list[str]:
    """Processes whose command line names the run's directory (Patroni, postgres, etcd of the run)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if base in cmd and int(d.name) != os.getpid():
                found.append(f"{d.name}: {cmd[:120]}")
    return found


def test_the_primary_cut_off_by_the_network_is_replaced_and_rejoins_with_nothing_lost():
    r = subprocess.run([sys.executable, "-m", "chaos.pg_netns", "--set", "wal_sender_timeout=5s"], capture_output=True,
                       text=True, timeout=380, env={**os.environ, "PYTHONPATH": str(SRC)})
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, r.stdout[-3000:] + r.stderr[-6000:]
    res = json.loads(lines[-1].removeprefix("RESULT "))
    print({k: v for k, v in res.items() if k not in ("ns_inodes", "dsn")})
    # nothing of the run is left, whatever the verdict
    if "run_id" in res:
        assert leftovers(res["run_id"], set(res["ns_inodes"])) == {}
        assert _processes_under(res["base"]) == []
        assert not Path(res["base"]).exists()
    assert res["error"] is None, r.stderr[-6000:]
    assert res["parameters"] == {"wal_sender_timeout": "5s"}
    assert res["held"] and r.returncode == 0
    # the synchronous standby was promoted; the isolated primary stopped taking writes by itself
    assert res["promoted"] == res["sync_standby"] != res["old_primary"]
    assert res["old_demote_line"] == "demoting self because DCS is not accessible and I was a leader"
    assert res["appends_on_new_while_cut"] >= 20  # appends went on on the new primary while the old one was cut
    # after the heal the old primary is a standby of the new one (rewound onto its timeline)
    assert res["roles_after"][res["old_primary"]] in ("replica", "sync_standby")
    assert res["roles_after"][res["promoted"]] == "leader"
    # the log: every acknowledged vote exactly once, gap-free, chain and audit clean
    assert res["votes_lost"] == 0 and res["duplicated_votes"] == 0 and res["gaps"] == 0
    assert res["duplicate_keys"] == 0 and res["audit_findings"] == [] and res["unexpected"] == []
    assert res["acked_votes"] > 0 and res["seconds_without_appends"] < 60
