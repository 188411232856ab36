"""Small process helpers shared by the service launchers: free ports, readiness waits."""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now (the kernel picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def die_with_parent() -> list[str]:
    """An argv prefix for children of a harness: the kernel sends them SIGTERM when the harness dies.

    So a killed `tvote up` leaves no node, projector or submitter behind. Linux only (PR_SET_PDEATHSIG,
    set by util-linux's ``setpriv`` and kept across its exec), tied to the *thread* that forks: use it
    only when forking from the main thread. Not a ``preexec_fn``: Python code between fork and exec
    deadlocks when another thread (gRPC's, after an etcd client closed) holds a lock at the fork.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
