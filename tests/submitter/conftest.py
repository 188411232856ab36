"""Real Postgres, etcd and anvil for the submitter tests, and the submitter as an OS process.

The Postgres/etcd fixtures (pg_server, etcd_server, database, etcd_prefix) come from tests/conftest.py;
each test gets its own anvil (it may be killed and restarted with its state), a freshly deployed
ThresholdRecord, and a key file for dev account 1 (authorised). Consensus transactions are made the
real way: trustees' signed votes through a Recorder guarded by the same etcd prefix.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eth_account import Account
from helpers import Writers, admin, trustees
from submitter_harness import REPO, Chain, Cluster, N, Proc, T

from chain import ThresholdRecordClient, make_web3
from devstack.anvil import Anvil, AnvilError, find_anvil
from events.postgres_store import PostgresStore
from recording.etcd_guard import EtcdGuard


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



@pytest.fixture
def cluster(database, etcd_server, etcd_prefix) -> Iterator[Cluster]:
    endpoint = f"127.0.0.1:{etcd_server.members[0].client_port}"
    members = trustees(N)
    recording = trustees(N + 1)[N]  # a member that only records (never votes, so never banned)
    rec = Writers(PostgresStore(database.app_dsn), voter=recording,
                  guard=lambda w: EtcdGuard(endpoint, etcd_prefix, w.replace(":", "-")))
    rec.execute(admin([*members, recording], T, deadline_ms=600_000)[1:])  # genesis: done by Writers
    yield Cluster(database, endpoint, etcd_prefix, rec, members)
    rec.close()



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
        with contextlib.suppress(ValueError):  # a bad key file: the submitter must refuse it itself
            cluster.admit_submitter(name or f"sub-{i}", (key_file or chain.key_file).read_text())
        with open(log_path, "wb") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        proc = Proc(p, log_path)
        procs.append(proc)
        return proc

    yield _spawn
    for p in procs:
        p.kill()



@pytest.fixture
def make_submitter(cluster: Cluster, chain: Chain) -> Iterator[Callable[..., object]]:
    """In-process Submitters (for steps a process cannot be paused between); closed after."""
    from submitter.core import Submitter

    made: list[tuple[object, EtcdGuard, PostgresStore]] = []

    def _make(name: str, **kwargs) -> Submitter:
        guard = EtcdGuard(cluster.etcd, cluster.prefix, name)
        store = PostgresStore(cluster.database.app_dsn)
        account = Account.from_key(chain.key_file.read_text())
        signer = cluster.admit_submitter(name, chain.key_file.read_text())
        sub = Submitter(store, guard, chain.client, account, name=name, log_signer=signer, **kwargs)
        made.append((sub, guard, store))
        return sub

    yield _make
    for sub, guard, store in made:
        sub.close()
        guard.close()
        store.close()
