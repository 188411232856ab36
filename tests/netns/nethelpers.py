"""Probes for the test-network tests: sockets opened inside a host's namespace (``Host.call``).

Every address probed is a test network host's own (or loopback): no probe ever sends a packet
toward the machine's real network.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devstack.netns import NETNS_DIR, STATE_DIR, Host, TestNetwork


def listen_tcp(host: Host, addr: str | None = None) -> socket.socket:
    """A TCP listener inside ``host`` (on its address unless told), any free port."""
    return host.call(socket.create_server, (addr or host.ip, 0), backlog=64)


def tcp_reach(src: Host, dst: Host, timeout: float = 0.5) -> bool:
    """Does a TCP connect from ``src`` to a listener on ``dst`` complete (both directions work)?"""
    server = listen_tcp(dst)
    try:
        port = server.getsockname()[1]
        try:
            src.call(socket.create_connection, (dst.ip, port), timeout=timeout).close()
            return True
        except OSError:
            return False
    finally:
        server.close()


def _udp_socket(host: Host, bind: tuple[str, int]) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root): no overflow drops
        s.bind(bind)
        return s

    return host.call(make)


def udp_count(src: Host, dst: Host, n: int, idle: float = 0.3) -> int:
    """Send ``n`` datagrams from ``src`` to ``dst`` (paced: no queue overflows) and count what arrives."""
    rx = _udp_socket(dst, (dst.ip, 0))
    tx = _udp_socket(src, (src.ip, 0))
    try:
        target = rx.getsockname()
        got = 0
        rx.settimeout(0)

        def drain() -> int:
            k = 0
            while True:
                try:
                    rx.recv(2048)
                    k += 1
                except BlockingIOError:
                    return k

        for i in range(n):
            tx.sendto(b"x" * 64, target)
            if i % 50 == 49:
                time.sleep(0.002)
                got += drain()
        rx.settimeout(idle)
        while True:
            try:
                rx.recv(2048)
                got += 1
            except TimeoutError:
                return got
    finally:
        rx.close()
        tx.close()


def udp_reach(src: Host, dst: Host) -> bool:
    return udp_count(src, dst, 3, idle=0.3) > 0


def reach_matrix(pairs: list[tuple[Host, Host]], proto: str = "udp") -> dict[tuple[str, str], bool]:
    """Probe many (src, dst) pairs at once; a failing probe costs its timeout, so run them in parallel."""
    probe = udp_reach if proto == "udp" else tcp_reach
    with ThreadPoolExecutor(max_workers=min(16, len(pairs))) as ex:
        results = list(ex.map(lambda p: probe(*p), pairs))
    return {(a.name, b.name): ok for (a, b), ok in zip(pairs, results, strict=True)}


def ns_inodes(net: TestNetwork) -> set[int]:
    return {os.stat(NETNS_DIR / ns).st_ino for ns in net.namespaces}


def leftovers(run_id: str, inodes: set[int]) -> dict[str, object]:
    """Everything of a run still on the machine; empty when the run is fully gone.

    Namespaces by name, the state file, any process or thread still inside one of the run's
    namespaces (by inode: a namespace outlives its name while something is in it, and with it its
    veths, bridge and iptables rules), and anything named after the run in the root namespace
    (links, iptables rules), where a run must never have put anything.
    """
    found: dict[str, object] = {}
    ns = [n for n in os.listdir(NETNS_DIR) if run_id in n] if NETNS_DIR.is_dir() else []
    if ns:
        found["namespaces"] = ns
    if (STATE_DIR / f"{run_id}.json").exists():
        found["state_file"] = str(STATE_DIR / f"{run_id}.json")
    inside = []
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*/ns/net"):
        try:
            if task.stat().st_ino in inodes:
                inside.append(str(task))
        except OSError:
            continue
    if inside:
        found["tasks_inside"] = inside
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    if run_id in links:
        found["root_links"] = [line for line in links.splitlines() if run_id in line]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    if run_id in rules:
        found["root_iptables"] = [line for line in rules.splitlines() if run_id in line]
    return found


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def iptables_rules(host: Host) -> list[str]:
    out = host.run(["iptables-save", "-t", "filter"]).stdout
    return [line for line in out.splitlines() if re.match(r"^-A ", line)]
