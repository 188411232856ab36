"""Where each process of ``tvote up`` runs: all on loopback, or each on a host of its own.

``--network loopback`` (the default) puts every process on 127.0.0.1 of this machine. ``--network
netns`` builds a test network (devstack.netns): one Linux network namespace per process with its own
address on a private /24 that exists only inside those namespaces, so trustees, etcd members,
Postgres, anvil, the projector and the submitter talk over real (virtual) links, as on separate
machines. ``up`` itself moves its main thread into the ``operator`` host before it opens any socket
or starts any thread that does (gRPC's included), so its own Postgres, etcd, web3 and API calls
reach every process by address, as an operator's machine would.

Teardown: ``close()`` (in ``up``'s ``finally``: normal exit, an error, Ctrl-C, SIGTERM) kills what
still runs in the namespaces and deletes them, and with them every veth, the bridge and every
iptables rule. A ``up`` killed with SIGKILL runs no code: a watchdog child (``python -m
tvote.placement --watch``) sees its pipe from ``up`` close and removes the run then
(``devstack.netns.cleanup_stale``, which only touches runs whose owner is gone).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from devstack.procs import die_with_parent

NETWORKS = ("loopback", "netns")
ETCD = ("etcd0", "etcd1", "etcd2")
LOOPBACK = "127.0.0.1"


def trustee_roles(n: int) -> list[str]:
    return [f"trustee-{i}" for i in range(1, n + 1)]


def roles(n: int) -> list[str]:
    """Every process of ``up`` (and the operator: ``up`` itself), in the order the test network numbers them."""
    return ["operator", "pg", *ETCD, "anvil", *trustee_roles(n), "projector", "submitter"]


class NetworkNeedsRoot(PermissionError):
    """``--network netns`` without root: nothing was started."""


class Placement:
    """Addresses and argv prefixes per role. Loopback: 127.0.0.1 and no prefix beyond dying with ``up``."""

    def __init__(self, network: str, nodes: int) -> None:
        if network not in NETWORKS:
            raise ValueError(f"--network must be one of {', '.join(NETWORKS)}, not {network!r}")
        self.network, self.nodes = network, nodes
        self.net = None  # devstack.netns.TestNetwork once open() built it
        self._watchdog: subprocess.Popen | None = None

    @property
    def isolated(self) -> bool:
        return self.network == "netns"

    def open(self) -> Placement:
        """Build the test network (netns) before anything else exists; loopback: nothing to do."""
        if not self.isolated:
            return self
        if os.geteuid() != 0:
            raise NetworkNeedsRoot("--network netns needs root (it creates network namespaces, veths and iptables "
                                   "rules): run it as root, or use --network loopback")
        from devstack.netns import TestNetwork

        self.net = TestNetwork(roles(self.nodes))
        try:
            self._watchdog = _start_watchdog()  # first: from the network's first namespace on, a SIGKILL is covered
            self.net.start()
        except BaseException:
            self.close()
            raise
        return self

    def ip(self, role: str) -> str:
        return self.net[role].ip if self.net else LOOPBACK

    def prefix(self, role: str) -> list[str]:
        """Run a child of ``up`` as ``role``: it dies with ``up`` (SIGTERM) and, on netns, runs in its host."""
        return [*die_with_parent(), *(self.net[role].prefix if self.net else [])]

    def ns_prefix(self, role: str) -> list[str]:
        """Only the netns part of ``prefix`` (for servers that daemonize, like Postgres's pg_ctl)."""
        return self.net[role].prefix if self.net else []

    def hosts(self, names: list[str]) -> list | None:
        return [self.net[r] for r in names] if self.net else None

    @contextlib.contextmanager
    def operating(self) -> Iterator[None]:
        """The calling (main) thread as the operator: inside the operator host on netns, unchanged on loopback."""
        if self.net is None:
            yield
            return
        with self.net["operator"].enter():
            yield

    def shell(self, role: str = "operator") -> str:
        """How a user runs a command as ``role`` from a shell (netns: ``ip netns exec <ns> ``)."""
        return f"ip netns exec {self.net[role].ns} " if self.net else ""

    def describe(self) -> str:
        if self.net is None:
            return "on 127.0.0.1"
        return (f"on test network {self.net.run_id} ({self.net.subnet}; namespaces {self.net.bridge_ns}-*, "
                "no route out)")

    def close(self) -> None:
        """Take the test network down (every process in it, its namespaces, links and rules); idempotent."""
        if self.net is not None:
            try:
                self.net.close()
            finally:
                if self._watchdog is not None:
                    _stop_watchdog(self._watchdog)
                    self._watchdog = None


def _start_watchdog() -> subprocess.Popen:
    """A child that outlives a SIGKILLed ``up`` just long enough to remove its test network.

    It reads a pipe whose only writer is ``up``: EOF means ``up`` is gone (however it died). Its own
    session, so a Ctrl-C at the terminal reaches ``up`` (which cleans up itself) and not the watchdog.
    """
    read, write = os.pipe()
    try:
        src = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
        child = subprocess.Popen([sys.executable, "-m", "tvote.placement", "--watch", str(read), str(os.getpid())],
                                 pass_fds=(read,),
                                 start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env)
    finally:
        os.close(read)
    child.pipe = write  # type: ignore[attr-defined]  # kept open (non-inheritable) for as long as ``up`` lives
    return child


def _stop_watchdog(child: subprocess.Popen) -> None:
    os.close(child.pipe)  # type: ignore[attr-defined]  # EOF: the watchdog reaps (nothing left) and exits
    try:
        child.wait(15)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _watch(fd: int, owner: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from devstack.netns import _alive, _pid_start, cleanup_stale

    start = _pid_start(owner)
    with contextlib.suppress(OSError):
        while os.read(fd, 1):
            pass
    deadline = time.monotonic() + 10  # its files close a moment before it counts as exited
    while start is not None and _alive(owner, start) and time.monotonic() < deadline:
        time.sleep(0.05)
    cleanup_stale()  # only runs whose owner is gone: ``up``'s, if it died without closing it


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--watch":
        _watch(int(sys.argv[2]), int(sys.argv[3]))
