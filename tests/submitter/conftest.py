"""Real Postgres, etcd and anvil for the submitter tests, and the submitter as an OS process.

The Postgres/etcd fixtures are the integration suite's own (imported, so one definition);
each test gets its own anvil (it may be killed and restarted with its state), a freshly deployed
ThresholdRecord, and a key file for dev account 1 (authorised). Consensus transactions are made the
real way: trustees' signed votes through a Recorder guarded by the same etcd prefix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account
from helpers import Trustee, trustees
from integration.conftest import database, etcd_prefix, etcd_server, pg_server  # noqa: F401

from chain import ThresholdRecordClient, make_web3
from devstack.anvil import Anvil, AnvilError, find_anvil
from events import rules
from events.postgres_store import PostgresStore
from node.guard import EtcdGuard
from node.recorder import Recorder, Status

REPO = Path(__file__).resolve().parents[2]
N, T = 3, 2


@dataclass
class Chain:
    node: Anvil
    client: ThresholdRecordClient
    key_file: Path
    sender: str

    def audit(self, cluster: Cluster) -> list[str]:
        """Findings of the chain-vs-log audit (empty: every record is a logged consensus, written once)."""
        from submitter.audit import audit_chain

        return audit_chain(cluster.recorder.store, self.client).findings

    def recorded(self) -> dict[str, int]:
        """tx_id -> number of successful writes on chain (the contract's Recorded events)."""
        counts: dict[str, int] = {}
        for ev in self.client.recorded_events():
            counts[ev.tx_id] = counts.get(ev.tx_id, 0) + 1
        return counts


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    try:
        binary = find_anvil()
    except AnvilError as exc:
        pytest.fail(f"submitter tests need the real anvil: {exc}", pytrace=False)
    node = Anvil(binary=binary, state_path=tmp_path / "anvil-state.json", log_path=tmp_path / "anvil.log")
    node.start()
    try:
        owner = Account.from_key(node.private_key(0))
        sub = Account.from_key(node.private_key(1))
        client = ThresholdRecordClient.deploy(make_web3(node.url), owner, [sub.address], chain_id=node.chain_id)
        key_file = tmp_path / "submitter.key"
        key_file.write_text(node.private_key(1))
        yield Chain(node, client, key_file, sub.address)
    finally:
        node.close()


@dataclass
class Cluster:
    """N trustees on one log; `consensus(tx_ids)` makes t of them vote the same value for each."""

    database: object
    etcd: str
    prefix: str
    recorder: Recorder
    members: list[Trustee] = field(default_factory=list)

    def consensus(self, tx_ids: list[str], value: int = 7) -> None:
        self.recorder.catch_up()
        eligible = [m for m in self.members if self.recorder.ledger.cluster.members[m.node_id].eligible]
        cmds = [m.receive(tx, value + i, now=int(time.time() * 1000)) for i, tx in enumerate(tx_ids)
                for m in eligible[:T]]
        results = self.recorder.execute(cmds)
        assert all(r.status is Status.APPENDED for r in results), results

    def execute(self, cmds: list[rules.Command]):
        return self.recorder.execute(cmds)

    def txs(self) -> dict[str, rules.Tx]:
        self.recorder.catch_up()
        return self.recorder.ledger.txs

    def events(self, type_: str | None = None) -> list:
        self.recorder.catch_up()
        out = []
        pos = 0
        while True:
            rows = self.recorder.store.read_all(after=pos, limit=5000)
            out += [r.event() for r in rows if type_ is None or r.event_type == type_]
            if len(rows) < 5000:
                return out
            pos = rows[-1].position


@pytest.fixture
def cluster(database, etcd_server, etcd_prefix) -> Iterator[Cluster]:  # noqa: F811
    endpoint = f"127.0.0.1:{etcd_server.members[0].client_port}"
    guard = EtcdGuard(endpoint, etcd_prefix, "voter-node")
    rec = Recorder(PostgresStore(database.app_dsn), guard, "voter-node")
    members = trustees(N)
    rec.execute([rules.AdmitMember(m.node_id, m.vote_key, m.peer_id, "op") for m in members])
    rec.execute([rules.Configure(T, "op", deadline_ms=600_000)])
    yield Cluster(database, endpoint, etcd_prefix, rec, members)
    rec.store.close()
    guard.close()


@dataclass
class Proc:
    popen: subprocess.Popen
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def spawn(cluster: Cluster, chain: Chain, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start `python -m submitter` against this test's log, etcd prefix and chain; all stopped after."""
    procs: list[Proc] = []

    def _spawn(*extra: str, name: str | None = None, chain_id: int | None = None, key_file: Path | None = None,
               lock_ttl: int = 3) -> Proc:
        i = len(procs)
        log_path = tmp_path / f"submitter-{i}.log"
        argv = [sys.executable, "-m", "submitter", "--dsn", cluster.database.app_dsn, "--etcd", cluster.etcd,
                "--etcd-prefix", cluster.prefix, "--rpc", chain.node.url, "--contract", chain.client.address,
                "--key-file", str(key_file or chain.key_file), "--chain-id", str(chain_id or chain.node.chain_id),
                "--confirmations", "0", "--lock-ttl", str(lock_ttl), "--name", name or f"sub-{i}",
                "--stuck-after", "2", "-v", *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("TVOTE_SUBMITTER_CRASH", None)
        with open(log_path, "wb") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        proc = Proc(p, log_path)
        procs.append(proc)
        return proc

    yield _spawn
    for p in procs:
        p.kill()


def wait_until(pred: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    detail = f"\n--- submitter output ---\n{proc.output()[-4000:]}" if proc else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


def all_confirmed(cluster: Cluster, tx_ids: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        txs = cluster.txs()
        return all(txs[t].status == rules.CONFIRMED for t in tx_ids)

    return check


@pytest.fixture
def make_submitter(cluster: Cluster, chain: Chain) -> Iterator[Callable[..., object]]:
    """In-process Submitters (for steps a process cannot be paused between); closed after."""
    from submitter.core import Submitter

    made: list[tuple[object, EtcdGuard, PostgresStore]] = []

    def _make(name: str, **kwargs) -> Submitter:
        guard = EtcdGuard(cluster.etcd, cluster.prefix, name)
        store = PostgresStore(cluster.database.app_dsn)
        account = Account.from_key(chain.key_file.read_text())
        sub = Submitter(store, guard, chain.client, account, name=name, **kwargs)
        made.append((sub, guard, store))
        return sub

    yield _make
    for sub, guard, store in made:
        sub.close()
        guard.close()
        store.close()
