"""The pieces every chaos scenario uses: private servers, a load driver that records acks, convergence waits.

Why private servers: the scenarios kill Postgres and etcd members, which must never hit the servers
other suites share. One ``ChaosEnv`` (a Postgres with fsync on, a 3-member etcd) serves many
scenarios; each scenario gets a fresh database and etcd prefix.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

from chaos.invariants import Ack
from devstack.etcd import Etcd
from devstack.patroni import PatroniCluster
from devstack.postgres import Postgres
from devstack.trustees import TrusteeCluster
from tvote import db

_dbs = itertools.count()


def default_threshold(n: int) -> int:
    """The seed's t = ceil(2N/3) (N=4: 3, N=5: 4, N=7: 5)."""
    return math.ceil(2 * n / 3)


@dataclass
class Scope:
    """One scenario's database and etcd prefix on the shared servers."""

    app_dsn: str
    owner_dsn: str
    prefix: str
    name: str


class ChaosEnv:
    """A private Postgres (fsync on: chaos kills it) and a 3-member etcd, for many scenarios."""

    def __init__(self, base: Path | None = None, etcd_size: int = 3, postgres: str = "embedded") -> None:
        """``postgres``: "embedded" (one server) or "patroni" (three members under Patroni on this etcd,
        synchronous replication; ``devstack.patroni``)."""
        self.etcd = Etcd(size=etcd_size, base_dir=(base / "etcd") if base else None)
        # Postgres always in a directory of its own: as root it runs as `postgres`, which cannot
        # traverse a caller's 0700 directories (pytest's tmp_path, for one).
        self.pg: Postgres | PatroniCluster = (
            PatroniCluster(self.etcd.endpoints, fsync=True, service_prefixes=("/chaos",)) if postgres == "patroni"
            else Postgres(fsync=True))

    def start(self) -> ChaosEnv:
        """Start etcd, then Postgres with the template database; on any failure stop what started and raise.

        (``with ChaosEnv()`` never reaches ``__exit__`` when ``start`` raises: a failed migration used to
        leave a Postgres running for good.)"""
        try:
            self.etcd.start()  # first: Patroni keeps its leader key there
            self.pg.start()
            self.pg.create_database("chaos_template")
            db.upgrade(self.pg.url("chaos_template"))
        except BaseException:
            self.close()
            raise
        return self

    def scope(self) -> Scope:
        name = f"chaos{next(_dbs)}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.pg.dsn("postgres"), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}" TEMPLATE chaos_template')
        return Scope(self.pg.dsn(name, user=db.APP_ROLE), self.pg.dsn(name), f"/chaos/{name}", name)

    def trustee_hosts(self, n: int) -> list | None:
        """Where the trustees run: None = on loopback (``chaos.netchaos`` puts each on a host of its own)."""
        return None

    def endpoint(self, member: int = 0) -> str:
        return self.etcd.endpoints[member]

    def heal_all(self) -> None:
        """Put every server back (a scenario that failed mid-fault must not poison the next one)."""
        if isinstance(self.pg, PatroniCluster):
            self.pg.heal()
        elif not self.pg._ready():
            self.pg.start()
        for i, m in enumerate(self.etcd.members):
            if m.proc is None or m.proc.poll() is not None:
                self.etcd.restart_member(i)

    def close(self) -> None:
        self.etcd.destroy()
        self.pg.destroy()

    def __enter__(self) -> ChaosEnv:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Offer:
    tx_id: str
    value: int
    at: float  # monotonic time the driver offered it


class Load:
    """Offers transaction ``tx_<k>`` (value k) to every node at ``rate``/s and records what was acked.

    A client's view: a node it cannot reach (down, SIGSTOPped) is skipped and the cast is kept in
    ``pending``; ``retry(i)`` replays those once the node is back, as a client that retries would.
    """

    def __init__(self, cluster: TrusteeCluster, rate: float, prefix: str = "tx", open_loop: bool = False) -> None:
        """``open_loop``: offer at the rate without waiting for the casts of one transaction to be answered
        (each answer still waits until the vote is in the log); default: the next transaction is offered
        once every node answered, so the rate offered is at most 1 / the slowest cast."""
        self.cluster, self.rate, self.prefix, self.open_loop = cluster, rate, prefix, open_loop
        self.n = len(cluster.trustees)
        self.down: set[int] = set()
        self.pending: dict[int, list[tuple[str, int]]] = {i: [] for i in range(self.n)}
        self.acks: list[Ack] = []
        self.byz_acks: list[Ack] = []
        self.offers: list[Offer] = []
        self.failed_casts = 0
        self.refusals: Counter[int] = Counter()  # by HTTP status (0: no answer)
        self.refused_ineligible = 0
        self.cast_latency: list[float] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(2, self.n) * (32 if open_loop else 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._k = 0

    def _cast(self, i: int, tx_id: str, value: int) -> bool:
        t0 = time.monotonic()
        try:
            code, body = self.cluster.cast(i, tx_id, value)
        except Exception:  # refused, reset, timed out: the client saw no ack
            code, body = 0, {}
        with self._lock:
            if code == 403:  # this trustee is banned or removed: final, a client does not retry it
                self.refused_ineligible += 1
                return False
            if code != 202:
                self.failed_casts += 1
                self.refusals[code] += 1
                self.pending[i].append((tx_id, value))
                return False
            self.cast_latency.append(time.monotonic() - t0)
            node = self.cluster.trustees[i]
            for sv in body.get("accepted", []):
                a = Ack(sv["tx_id"], sv["node_id"], int(sv["value"]), time.monotonic())
                (self.acks if node.byzantine == "none" else self.byz_acks).append(a)
        return True

    def offer_one(self) -> str:
        tx_id, value = f"{self.prefix}_{self._k:05d}", self._k
        self._k += 1
        with self._lock:
            self.offers.append(Offer(tx_id, value, time.monotonic()))
            targets = [i for i in range(self.n) if i not in self.down]
            for i in self.down:
                self.pending[i].append((tx_id, value))
        casts = [self._pool.submit(self._cast, i, tx_id, value) for i in targets]
        if not self.open_loop:
            for f in casts:
                f.result()
        return tx_id

    def run(self, count: int) -> None:
        """Offer ``count`` transactions at the rate, in this thread."""
        t0 = time.monotonic()
        for j in range(count):
            if self._stop.is_set():
                return
            self.offer_one()
            sleep = t0 + (j + 1) / self.rate - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)

    def start(self, count: int) -> Load:
        self._thread = threading.Thread(target=self.run, args=(count,), daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    def retry(self, i: int) -> None:
        """The node is reachable again: cast what the client could not."""
        with self._lock:
            todo, self.pending[i] = self.pending[i], []
            self.down.discard(i)
        for tx_id, value in todo:
            self._cast(i, tx_id, value)

    def drain(self, reachable: Callable[[int], bool], timeout: float) -> None:
        """Retry what the client could not cast, round after round, until nothing is pending or ``timeout``.

        A client keeps an unacknowledged cast until a node takes it: one retry right after a fault may still
        meet a node that is catching up (its worker behind, a store it has not reconnected to yet).
        """
        end = time.monotonic() + timeout
        while True:
            todo = [i for i, casts in self.pending.items() if casts and reachable(i)]
            if not todo or time.monotonic() >= end:
                return
            for i in todo:
                self.retry(i)
            if any(self.pending[i] for i in todo):
                time.sleep(1.0)

    @property
    def tx_ids(self) -> list[str]:
        return [o.tx_id for o in self.offers]

    def close(self) -> None:
        self._stop.set()
        self.join(30)
        self._pool.shutdown(wait=True)


def honest(cluster: TrusteeCluster) -> list[int]:
    return [i for i, t in enumerate(cluster.trustees) if t.byzantine == "none"]


def views(cluster: TrusteeCluster, nodes: list[int], tx_ids: list[str]) -> dict[str, dict[str, dict | None]]:
    return {cluster.trustees[i].node_id: {tx: cluster.tx(i, tx) for tx in tx_ids} for i in nodes}


def wait_converged(cluster: TrusteeCluster, nodes: list[int], tx_ids: list[str], ok: set[str],
                   timeout: float, abort_on_exit: bool = False) -> float | None:
    """Seconds until every listed node shows every tx in an ``ok`` state with one view; None on timeout.

    Polls transactions not yet settled only (a node's /tx answer is cheap, but N x txs adds up).
    """
    t0 = time.monotonic()
    left = list(tx_ids)
    while time.monotonic() - t0 < timeout:
        if abort_on_exit and any(cluster.trustees[i].proc.poll() is not None for i in nodes):
            return None  # a node died: waiting on it is pointless, the caller restarts it
        still = []
        for tx in left:
            vs = [cluster.tx(i, tx) for i in nodes]
            if not all(v and v["status"] in ok for v in vs) or len({repr(sorted(v.items())) for v in vs}) != 1:
                still.append(tx)
        left = still
        if not left:
            return time.monotonic() - t0
        time.sleep(0.2)
    return None


def wait_for(pred: Callable[[], Any], timeout: float, step: float = 0.1) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return None


def freeze(cluster: TrusteeCluster, i: int) -> None:
    """SIGSTOP: the node neither sends nor receives, nor reaches etcd or Postgres (see scenarios.frozen)."""
    p = cluster.trustees[i].proc
    if p and p.poll() is None:
        os.kill(p.pid, signal.SIGSTOP)


def thaw(cluster: TrusteeCluster, i: int) -> None:
    p = cluster.trustees[i].proc
    if p and p.poll() is None:
        os.kill(p.pid, signal.SIGCONT)


@dataclass
class ProcSampler:
    """CPU seconds and peak RSS per process, sampled in a thread (psutil), for the load points."""

    pids: dict[str, int]
    interval: float = 0.5
    rss_peak: dict[str, int] = field(default_factory=dict)
    cpu0: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._procs = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):  # a process that is already gone is not sampled
                p = psutil.Process(pid)
                self._procs[name] = p
                t = p.cpu_times()
                self.cpu0[name] = t.user + t.system + _children_cpu(p)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ProcSampler:
        self._t0 = time.monotonic()
        self._t.start()
        return self

    def _sample(self) -> None:
        for name, p in self._procs.items():
            with contextlib.suppress(psutil.Error):  # it exited between two samples: keep the last figures
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                self.rss_peak[name] = max(self.rss_peak.get(name, 0), rss)
                t = p.cpu_times()
                self.cpu[name] = t.user + t.system + _children_cpu(p) - self.cpu0.get(name, 0.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> float:
        self._sample()
        self._stop.set()
        self._t.join(5)
        return time.monotonic() - self._t0


def _children_cpu(p: psutil.Process) -> float:
    total = 0.0
    for c in p.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a child that just exited adds nothing
            t = c.cpu_times()
            total += t.user + t.system
    return total
