"""N trustee node processes on loopback, for tests and ``tvote up``.

Generates each trustee's Ed25519 key file (mode 0600; the libp2p peer id derives from it),
admits them as members through the real write path (R1), configures t, starts one
``tvote node`` process each (the first bootstraps the others), and talks to their local APIs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nacl.signing

from devstack.operator import NAME as OPERATOR
from devstack.operator import Plan, admit_submitter, operate, operator_signer
from devstack.procs import die_with_parent, wait_until
from devstack.tls import self_signed
from events import rules
from node.p2p.identity import generate_key_file, load_seed, peer_id_from_seed
from node.signer import Signer
from tvote import roles

if TYPE_CHECKING:
    from devstack.netns import Host

SRC = Path(__file__).resolve().parents[1]


@dataclass
class Trustee:
    node_id: str
    key_file: Path
    seed: bytes
    byzantine: str = "none"
    proc: subprocess.Popen | None = None
    status: dict = field(default_factory=dict)
    log: Path | None = None
    token: str = ""  # its own API bearer token (a file of its own, mode 0600, beside its key)
    wrapper: list[str] = field(default_factory=list)  # e.g. ["faketime", "-f", "+5s"] for clock skew
    extra_args: list[str] = field(default_factory=list)  # more `tvote node` options
    drop_rate: float = 0.0  # chaos: drop this fraction of accepted gossip (src/chaos/trustee.py)

    @property
    def peer_id(self) -> str:
        return peer_id_from_seed(self.seed)

    @property
    def vote_key(self) -> bytes:
        return bytes(nacl.signing.SigningKey(self.seed).verify_key)


def init_journal(key_file: Path, node_id: str) -> Path:
    """The empty signing journal of a NEW trustee, beside its key (never for one that has signed)."""
    journal = Path(f"{key_file}.journal")
    Signer.open(journal, nacl.signing.SigningKey(load_seed(key_file)), node_id, create=True).close()
    return journal


class TrusteeCluster:
    def __init__(self, n: int, threshold: int, dsn: str, etcd: str, etcd_prefix: str = "/tvote",
                 byzantine: dict[int, str] | None = None, base_dir: Path | None = None,
                 deadline_ms: int = 30_000, die_with_parent: bool = False, hosts: Sequence[Host] | None = None
                 ) -> None:
        """``hosts``: one test-network host per trustee (devstack.netns): each node runs inside its own,
        listens on its address (libp2p and the API, the API over TLS with a certificate made here). The
        caller must then reach those addresses: run from the network's operator host (``enter_netns``)."""
        if hosts is not None and len(hosts) != n:
            raise ValueError(f"{len(hosts)} hosts for {n} trustees")
        self.hosts = list(hosts) if hosts is not None else None
        self.dsn, self.etcd, self.prefix = dsn, etcd, etcd_prefix
        self.die_with_parent = die_with_parent
        self.threshold, self.deadline_ms = threshold, deadline_ms
        self._owned_tmp = base_dir is None  # destroy() removes only a directory this cluster made
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="tvote-nodes-"))
        self.base.mkdir(parents=True, exist_ok=True)
        self.operator = operator_signer(self.base)
        self.trustees: list[Trustee] = []
        for i in range(1, n + 1):
            key = self.base / f"trustee-{i}.key"
            if not key.exists():
                generate_key_file(key)
                init_journal(key, f"trustee-{i}")  # a new trustee has signed nothing yet (R14)
            tr = Trustee(f"trustee-{i}", key, load_seed(key), (byzantine or {}).get(i - 1, "none"))
            tr.token = self._token(tr)
            self.trustees.append(tr)

    def _token(self, t: Trustee) -> str:
        """Each trustee's API token, kept beside its key (a restart on the same directory keeps it)."""
        path = self.token_file(t)
        if not path.exists():
            path.write_text(secrets.token_hex(16))
            path.chmod(0o600)
        return path.read_text().strip()

    def token_file(self, t: Trustee) -> Path:
        return Path(f"{t.key_file}.api-token")

    def admit(self, trustees: list[Trustee] | None = None, configure: bool = True) -> None:
        """Admit these trustees and configure the cluster: only what the log does not hold yet (a restart)."""
        def plan(cluster: rules.Cluster) -> list[rules.Command]:
            cmds: list[rules.Command] = [rules.AdmitMember(t.node_id, t.vote_key, t.peer_id, OPERATOR)
                                         for t in trustees or self.trustees if t.node_id not in cluster.members]
            if configure and cluster.config is None:
                cmds.append(rules.Configure(self.threshold, OPERATOR, deadline_ms=self.deadline_ms))
            return cmds

        self.operate(plan)

    def operate(self, commands: list[rules.Command] | Plan, strict: bool = True) -> list:
        """Operator commands (signed by this cluster's operator key, R13), e.g. ``rules.Unban(...)``."""
        return operate(self.dsn, self.etcd, self.prefix, self.operator, commands, strict)

    def admit_submitter(self, name: str, eth_private_key: str) -> None:
        admit_submitter(self.dsn, self.etcd, self.prefix, self.operator, name, eth_private_key)

    def start_node(self, t: Trustee, bootstrap: list[str]) -> None:
        status = self.base / f"{t.node_id}.status"
        status.unlink(missing_ok=True)
        t.log = self.base / f"{t.node_id}.log"
        if t.byzantine != "none" or t.drop_rate:  # a misbehaving trustee: the test harness's wrapper
            entry = ["-m", "chaos.trustee", "--mode", t.byzantine, "--drop-rate", str(t.drop_rate), "--"]
        else:
            entry = ["-c", "from tvote.cli import app; app()"]
        spec = self.process(t, bootstrap)
        args = spec.args[1:] if entry[-1] == "--" else spec.args  # the wrapper runs `node` itself
        argv = [sys.executable, *entry, *args, "--status-file", str(status)]
        host = self.host_of(t)
        argv = [*(die_with_parent() if self.die_with_parent else []), *(host.prefix if host else []), *t.wrapper,
                *argv, *t.extra_args]
        env = {**os.environ, **spec.env, "PYTHONPATH": str(SRC)}
        with open(t.log, "ab") as log:
            # die_with_parent is tied to the *thread* that forks (prctl semantics): only for callers that
            # start nodes from their main thread, like `tvote up`.
            t.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if t.proc.poll() is not None:
                raise RuntimeError(f"{t.node_id} exited: {t.log.read_text()[-2000:]}")
            return status.exists() and status.stat().st_size > 0

        wait_until(up, 60, t.node_id)
        t.status = json.loads(status.read_text())

    def place(self, t: Trustee) -> roles.Place:
        """Where the trustee listens: its own test-network host (every interface, the well-known ports, its
        address advertised, as in deploy/), or loopback, where a restart keeps the ports it had."""
        host = self.host_of(t)
        if host is not None:
            return roles.Place.own_host(host.ip)
        if t.status:  # peers and clients know it by these
            return roles.Place.loopback(int(t.status["listen_addrs"][0].split("/tcp/")[1].split("/")[0]),
                                        int(t.status["api_port"]))
        return roles.Place.loopback()

    def process(self, t: Trustee, bootstrap: list[str]) -> roles.Process:
        """The `tvote node` process of this trustee (tvote.roles: the description deploy/ is checked against)."""
        tls = tuple(str(p) for p in self.tls_files(t)) if self.host_of(t) is not None else None
        return roles.node(self.place(t), t.node_id, str(t.key_file), str(self.token_file(t)), self.dsn, self.etcd,
                          f"{t.key_file}.journal", bootstrap, tls, self.prefix)  # type: ignore[arg-type]

    def start(self) -> TrusteeCluster:
        self.admit()
        first = self.trustees[0]
        self.start_node(first, [])
        for t in self.trustees[1:]:
            self.start_node(t, first.status["listen_addrs"][:1] + self._some_addrs(t))
        for t in self.trustees:
            wait_until(lambda t=t: self._started(t), 60, f"{t.node_id} ready")
        time.sleep(2.5)  # two GossipSub heartbeats: meshes form
        return self

    def _started(self, t: Trustee) -> bool:
        """Ready, or, for a trustee the log banned or removed (its peers refuse it, it is never ready), alive."""
        code, body = self._get(t, "/readyz")
        return code == 200 or (body.get("eligible") is False and self._get(t, "/healthz")[0] == 200)

    def _some_addrs(self, exclude: Trustee) -> list[str]:
        """A second bootstrap peer where there is one (eclipse: never rely on one peer)."""
        started = [t for t in self.trustees[1:] if t.proc and t.proc.poll() is None and t is not exclude]
        return started[-1].status["listen_addrs"][:1] if started else []

    # API --------------------------------------------------------------------------------------

    def host_of(self, t: Trustee) -> Host | None:
        return self.hosts[self.trustees.index(t)] if self.hosts is not None else None

    def api_host(self, t: Trustee) -> str:
        """The address clients reach its API at (on its own host it binds every interface)."""
        host = self.host_of(t)
        return host.ip if host is not None else t.status.get("api_host", "127.0.0.1")

    def tls_files(self, t: Trustee) -> tuple[Path, Path]:
        """The trustee's API certificate and key for its host's address (made once, kept beside its key)."""
        host = self.host_of(t)
        cert, key = Path(f"{t.key_file}.api.crt"), Path(f"{t.key_file}.api.key")
        if host is not None and not cert.exists():
            made = self_signed(self.base, f"{t.node_id}-tls", host.ip)
            made[0].replace(cert)
            made[1].replace(key)
        return cert, key

    def _request(self, t: Trustee, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        api_host = self.api_host(t)
        context = ssl.create_default_context(cafile=str(self.tls_files(t)[0])) if t.status.get("api_tls") else None
        req = urllib.request.Request(
            f"{'https' if context else 'http'}://{api_host}:{t.status['api_port']}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {t.token}", "Content-Type": "application/json"})
        code, body = 0, {}
        for _ in range(10):  # a client that honours Retry-After (back-pressure), a few times
            try:
                with urllib.request.urlopen(req, timeout=15, context=context) as r:
                    return r.status, json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as e:
                code, body = e.code, json.loads(e.read() or b"{}")
                wait = e.headers.get("Retry-After") if e.code == 503 else None
                if wait is None or not wait.isdigit():
                    return code, body
                time.sleep(min(int(wait), 10))
        return code, body

    def _get(self, t: Trustee, path: str) -> tuple[int, dict]:
        try:
            return self._request(t, "GET", path)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, {}

    def cast(self, i: int, tx_id: str, value: int) -> tuple[int, dict]:
        return self._request(self.trustees[i], "POST", "/votes", {"tx_id": tx_id, "value": value})

    def cast_many(self, i: int, ballots: list[tuple[str, int]]) -> tuple[int, dict]:
        """One request casting trustee i's votes for many transactions (``POST /votes`` batch form)."""
        return self._request(self.trustees[i], "POST", "/votes",
                             {"votes": [{"tx_id": tx, "value": v} for tx, v in ballots]})

    def tx(self, i: int, tx_id: str) -> dict | None:
        code, body = self._get(self.trustees[i], f"/tx/{tx_id}")
        return body if code == 200 else None

    def counters(self, i: int) -> dict:
        return self._get(self.trustees[i], "/counters")[1]

    # lifecycle --------------------------------------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL one node (chaos): no drain, no goodbye."""
        t = self.trustees[i]
        if t.proc and t.proc.poll() is None:
            t.proc.kill()
            t.proc.wait()

    def restart(self, i: int) -> None:
        """Start a stopped or killed node again with the same key, bootstrapping from live peers."""
        t = self.trustees[i]
        peers = [x.status["listen_addrs"][0] for x in self.alive() if x is not t][:2]
        self.start_node(t, peers)
        wait_until(lambda: self._started(t), 60, f"{t.node_id} ready")

    def restart_all(self, indices: list[int] | None = None) -> None:
        """Start stopped nodes together (a node is ready only with t-1 members connected: not one by one)."""
        todo = [self.trustees[i] for i in (indices if indices is not None else range(len(self.trustees)))]
        for t in todo:
            peers = [x.status["listen_addrs"][0] for x in self.alive() if x is not t][:2]
            self.start_node(t, peers)
        for t in todo:
            wait_until(lambda t=t: self._started(t), 60, f"{t.node_id} ready")

    def alive(self) -> list[Trustee]:
        return [t for t in self.trustees if t.proc and t.proc.poll() is None]

    def stop(self, timeout: float = 30.0) -> dict[str, float]:
        """SIGTERM every node; returns how long each took to exit."""
        took = {}
        for t in self.alive():
            t.proc.send_signal(signal.SIGTERM)
        for t in self.trustees:
            if t.proc is None:
                continue
            t0 = time.monotonic()
            try:
                t.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                t.proc.kill()
                t.proc.wait()
            took[t.node_id] = time.monotonic() - t0
        return took

    def destroy(self, timeout: float = 30.0) -> dict[str, float]:
        """Stop every node, then remove the directory this cluster made: its keys, journals, tokens and logs.

        A directory the caller gave (``tvote up --data-dir``, a restart test) is kept. Without this every run
        left ~170 KB of private keys in the temporary directory."""
        took = self.stop(timeout)
        if self._owned_tmp:
            shutil.rmtree(self.base, ignore_errors=True)
        return took

    def __enter__(self) -> TrusteeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
