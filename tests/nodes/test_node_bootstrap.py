"""A trustee's bootstrap peers at start (issue 18, "Bad input"): one that answers as another peer id, or none
that answers at all, is a one-line error and exit 1, with nothing left behind (the instance claim released:
the same trustee starts again at once, not after the claim's lease)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from devstack.trustees import SRC, TrusteeCluster
from node.signer.claim import CLAIM_TTL

pytestmark = pytest.mark.integration


def _run_node(cluster: TrusteeCluster, i: int, bootstrap: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    t = cluster.trustees[i]
    spec = cluster.process(t, bootstrap)
    return subprocess.run([sys.executable, "-c", "from tvote.cli import app; app()", *spec.args,
                           "--bootstrap-timeout", str(timeout_s)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **spec.env, "PYTHONPATH": str(SRC), "COLUMNS": "400"})


def _error_line(r: subprocess.CompletedProcess) -> str:
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stdout
    return lines[0]


def test_a_bootstrap_peer_with_another_peer_id_or_none_reachable_stops_the_node(database, etcd_server, etcd_prefix):
    cluster = TrusteeCluster(3, 2, database.app_dsn, etcd_server.endpoints[0], etcd_prefix)
    cluster.start()
    try:
        one, two, three = cluster.trustees
        two_addr = two.status["listen_addrs"][0]
        for t in (one, three):  # trustee-2 alone stays up
            t.proc.send_signal(signal.SIGTERM)
            t.proc.wait(30)

        # trustee-2's address, but trustee-3's peer id: the handshake shows another node there
        wrong = f"{two_addr.rsplit('/p2p/', 1)[0]}/p2p/{three.peer_id}"
        line = _error_line(_run_node(cluster, 0, [wrong], 20))
        assert f"--bootstrap {wrong}: that address answers, but not as peer {three.peer_id}" in line

        # trustee-1's old address: nobody listens there any more. trustee-3 starts on a new port, so trustee-2
        # (which is not given) cannot dial it either: it is alone.
        gone = one.status["listen_addrs"][0]
        three.status = {}
        t0 = time.monotonic()
        line = _error_line(_run_node(cluster, 2, [gone], 3))
        assert "no bootstrap peer reachable in 3 s" in line and gone in line, line
        assert time.monotonic() - t0 < 60

        # nothing was left behind: the same trustee starts at once with a good bootstrap peer
        t0 = time.monotonic()
        cluster.start_node(one, [two_addr])
        assert time.monotonic() - t0 < CLAIM_TTL, "the failed starts left their instance claim to expire"
    finally:
        cluster.destroy()
