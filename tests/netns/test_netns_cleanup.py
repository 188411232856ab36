"""Nothing of a run is left: after a normal exit, SIGTERM, Ctrl-C, a failure or a SIGKILL mid-setup, a crash.

"Nothing" is checked by ``nethelpers.leftovers``: no namespace of the run by name, no state file, no
process or thread still inside one of its namespaces (by inode: as long as one is, the namespace
lives on unnamed, and with it its veths, its bridge and its iptables rules), and nothing of the run
in the root namespace's links or iptables rules (where it never puts anything).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nethelpers import leftovers, ns_inodes, pid_alive, tcp_reach

import devstack
from devstack import netns
from devstack.netns import NETNS_DIR, STATE_DIR, NetnsError, TestNetwork, cleanup_stale

pytestmark = pytest.mark.timeout(60)

SRC = str(Path(devstack.__file__).resolve().parents[1])

# A run in a child process: builds a network, leaves faults and a daemon in it, reports, then waits.
OWNER = r"""
import json, os, signal, sys, time
from devstack.netns import NETNS_DIR, TestNetwork
with TestNetwork(["x", "y", "z"]) as net:
    net.partition(["x"], ["y", "z"])
    net.loss("y", 0.2)
    net.bandwidth("z", "1mbit")
    tracked = net["x"].popen(["sleep", "300"])
    daemon = int(net["y"].run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"]).stdout)
    inodes = [os.stat(NETNS_DIR / ns).st_ino for ns in net.namespaces]  # nsfs inodes: the namespaces themselves
    print(json.dumps({"run_id": net.run_id, "inodes": inodes, "pids": [tracked.pid, daemon]}), flush=True)
    time.sleep(300)
"""

# A run killed while its network is half built: after the namespaces, during the bridge.
HALF_BUILT = r"""
import os, signal
from devstack import netns as N
real = N._ip_batch
def dying(lines, netns=None, force=False):
    if netns and netns.count("-") == 1:  # "tvnet-<id>", the bridge namespace: the bridge step
        real(lines[:6], netns=netns)  # the bridge and the first veth, not the others
        print(netns.split("-")[1], flush=True)
        input()  # the test holds the lock of test networks now: no other session reaps us before it looks
        os.kill(os.getpid(), signal.SIGKILL)
    return real(lines, netns, force)
N._ip_batch = dying
N.TestNetwork(["p", "q", "r"]).start()
"""


def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": SRC})


# The crash tests hold the machine-wide lock of test networks from before the kill until they have
# looked and reaped (netns._reap_stale is cleanup_stale under that lock): another session's start()
# running cleanup_stale meanwhile waits, so "left behind, then removed by us" is not a race.


def test_exit_removes_everything():
    with TestNetwork(["a", "b", "c"]) as net:
        net.partition(["a"], ["b"])
        net.loss("c", 0.1)
        net.bandwidth("b", "1mbit")
        tracked = net["a"].popen(["sleep", "300"])
        daemon = int(net["b"].run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"]).stdout)  # not tracked
        rid, inodes = net.run_id, ns_inodes(net)
        assert (STATE_DIR / f"{rid}.json").exists() and len(inodes) == 4
    assert leftovers(rid, inodes) == {}
    assert tracked.returncode is not None and not pid_alive(daemon)
    with pytest.raises(NetnsError, match="not up"):
        net["a"].popen(["true"])
    net.close()  # idempotent


def test_owner_killed_then_cleanup_stale_removes_it():
    with TestNetwork(["live"]) as live:  # a live run of someone else: must survive the cleanup
        owner = _spawn(OWNER)
        report = json.loads(owner.stdout.readline())
        rid, inodes = report["run_id"], set(report["inodes"])
        with netns._locked():
            owner.kill()  # SIGKILL: no handler, no atexit, nothing of it runs
            owner.wait()
            left = leftovers(rid, inodes)
            assert left["namespaces"] and left["state_file"] and all(pid_alive(p) for p in report["pids"])
            assert rid in netns._reap_stale()
        assert leftovers(rid, inodes) == {}
        assert not any(pid_alive(p) for p in report["pids"])
        assert live.run_id not in cleanup_stale() and (NETNS_DIR / live["live"].ns).exists()
        assert live["live"].run(["true"]).returncode == 0


def test_killed_mid_setup_then_cleanup_stale():
    child = _spawn(HALF_BUILT)
    rid = child.stdout.readline().strip()
    with netns._locked():
        child.communicate("\n")
        assert child.returncode == -signal.SIGKILL and len(rid) == 6
        half = [n for n in os.listdir(NETNS_DIR) if rid in n]
        assert len(half) == 4  # bridge + 3 hosts exist, 2 of them unwired: a half-built network
        inodes = {os.stat(NETNS_DIR / n).st_ino for n in half}
        assert rid in netns._reap_stale()
    assert leftovers(rid, inodes) == {}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_take_the_network_down(sig):
    owner = _spawn(OWNER)
    report = json.loads(owner.stdout.readline())
    owner.send_signal(sig)
    assert owner.wait(60) != 0  # teardown waits for the machine-wide netns lock another session may hold
    assert leftovers(report["run_id"], set(report["inodes"])) == {}  # without any cleanup_stale
    assert not any(pid_alive(p) for p in report["pids"])


def test_failure_mid_setup_cleans_up(monkeypatch):
    real = netns._ip_batch
    seen = {}

    def failing(lines, netns=None, force=False):
        if netns and netns.endswith("-b"):  # the second host's addresses: bridge and veths exist by now
            seen["run_id"] = netns.split("-")[1]
            seen["inodes"] = {os.stat(NETNS_DIR / n).st_ino for n in os.listdir(NETNS_DIR) if seen["run_id"] in n}
            raise NetnsError("injected failure")
        return real(lines, netns, force)

    monkeypatch.setattr(netns, "_ip_batch", failing)
    net = TestNetwork(["a", "b", "c"])
    with pytest.raises(NetnsError, match="injected"):
        net.start()
    assert len(seen["inodes"]) == 4
    assert leftovers(seen["run_id"], seen["inodes"]) == {}


def test_orphan_namespace_without_state_is_removed():
    rid = secrets.token_hex(3)
    assert not (STATE_DIR / f"{rid}.json").exists()
    name = f"tvnet-{rid}-x"
    with netns._locked():
        subprocess.run(["ip", "netns", "add", name], check=True)
        inode = os.stat(NETNS_DIR / name).st_ino
        assert rid in netns._reap_stale()
    assert leftovers(rid, {inode}) == {}


def test_twelve_hosts_setup_and_teardown_times():
    names = ["pg", "etcd0", "etcd1", "etcd2", "anvil", *(f"trustee-{i}" for i in range(1, 6)), "projector",
             "submitter"]
    t0 = time.monotonic()
    net = TestNetwork(names).start()
    try:
        built = time.monotonic() - t0
        ring = list(net)
        assert all(tcp_reach(a, b) for a, b in zip(ring, ring[1:] + ring[:1], strict=True))
        net.partition(names[:6], names[6:])
        net.heal()
        rid, inodes = net.run_id, ns_inodes(net)
    finally:
        t1 = time.monotonic()
        net.close()
        gone = time.monotonic() - t1
    print(f"12 hosts: setup {built * 1000:.0f} ms, teardown {gone * 1000:.0f} ms")
    assert leftovers(rid, inodes) == {}
    assert built < 5 and gone < 5
