"""One real cluster for the interop tests, with JavaScript peers in it.

``world`` (once per run of this folder): Postgres and etcd (tests/services.py), three Python trustees
(``TrusteeCluster``, t = 3), anvil with ThresholdRecord and a submitter process, and three js members the
operator admits through the log while the cluster runs (``AdmitMember``, as for any trustee):

- js-1, an honest trustee written in JavaScript (votes, counts toward consensus);
- js-2, which sends bad input (dropped and counted at the Python edge, never blamed);
- js-3, which forges a vote in trustee-1's name and is banned for it (R7).

js-4's key is never admitted: an outsider. Tests that need a js peer start it with ``world.peer(...)``;
peers are stopped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from eth_account import Account
from jsrun import JsPeer, NodeMissing, check_installed

from chain import ThresholdRecordClient, make_web3
from devstack.anvil import Anvil, AnvilError, find_anvil
from devstack.operator import NAME as OPERATOR
from devstack.trustees import TrusteeCluster
from events import rules
from events.postgres_store import PostgresStore
from node.p2p.identity import generate_key_file, load_seed, peer_id_from_seed

SRC = Path(__file__).resolve().parents[2] / "src"
JS_MEMBERS = ("js-1", "js-2", "js-3")


def wait_for(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class World:
    dsn: str  # the service role's (tvote_app)
    owner_dsn: str
    cluster: TrusteeCluster
    anvil: Anvil
    client: ThresholdRecordClient
    submitter: subprocess.Popen
    base: Path
    keys: dict[str, Path] = field(default_factory=dict)  # js node id -> key file (js-4: never admitted)
    peers: list[JsPeer] = field(default_factory=list)
    forgery: dict | None = None  # js-3's reply to its forged vote, once sent

    def forge(self) -> dict:
        """js-3 sends one vote in trustee-1's name, signed with its own key (once per world: it is banned for it)."""
        if self.forgery is None:
            self.forgery = self.peer("js-3").call(cmd="vote", tx_id="interop_forged", value=9, **{"as": "trustee-1"})
        return self.forgery

    @property
    def members_file(self) -> Path:
        return self.base / "members.json"

    def peer_id(self, name: str) -> str:
        return peer_id_from_seed(load_seed(self.keys[name]))

    def trustee_addrs(self) -> list[str]:
        return [t.status["listen_addrs"][0] for t in self.cluster.trustees]

    def peer(self, name: str, connect: list[str] | None = None, dial_timeout: float = 20) -> JsPeer:
        """The js peer ``name`` (one process per key: a second one would be the same libp2p peer)."""
        for p in self.peers:
            if p.name == name and p.proc.poll() is None:
                return p
        p = JsPeer(self.keys[name], name, connect if connect is not None else self.trustee_addrs(), self.members_file,
                   self.base / f"{name}.log", dial_timeout=dial_timeout)
        self.peers.append(p)
        return p

    def rows(self, event_type: str | None = None) -> list:
        store = PostgresStore(self.dsn)
        try:
            rows = store.read_all(limit=1_000_000)
        finally:
            store.close()
        return [r for r in rows if event_type is None or r.event_type == event_type]

    def counters(self) -> list[dict]:
        return [self.cluster.counters(i) for i in range(len(self.cluster.trustees))]


def _database(pg_server) -> tuple[str, str, str]:
    from services import TEMPLATE

    from tvote import db

    name = f"interop_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
    return name, pg_server.dsn(name, user=db.APP_ROLE), pg_server.dsn(name)


@pytest.fixture(scope="package")
def world(pg_server, etcd_server, tmp_path_factory) -> Iterator[World]:
    try:
        check_installed()
        anvil_bin = find_anvil()
    except (NodeMissing, AnvilError) as e:
        pytest.fail(str(e), pytrace=False)
    base = tmp_path_factory.mktemp("interop")
    name, dsn, owner_dsn = _database(pg_server)
    prefix = f"/interop/{uuid.uuid4().hex[:8]}"
    cluster = TrusteeCluster(3, 3, dsn, etcd_server.endpoints[0], prefix, base_dir=base / "nodes", deadline_ms=20_000)
    anvil = Anvil(binary=anvil_bin, log_path=base / "anvil.log")
    submitter = None
    try:
        cluster.start()
        keys = {}
        for js in (*JS_MEMBERS, "js-4"):
            keys[js] = base / f"{js}.key"
            generate_key_file(keys[js])
        # The operator admits the js trustees while the cluster runs: each node follows the log and lets
        # them through its connection gate (their peer ids derive from their keys, R1).
        cluster.operate([rules.AdmitMember(js, _pub(keys[js]), peer_id_from_seed(load_seed(keys[js])), OPERATOR)
                         for js in JS_MEMBERS])
        members = [{"node_id": t.node_id, "public_key": t.vote_key.hex()} for t in cluster.trustees]
        members += [{"node_id": js, "public_key": _pub(keys[js]).hex()} for js in JS_MEMBERS]
        (base / "members.json").write_text(json.dumps(members))
        anvil.start()
        owner, sub = Account.from_key(anvil.private_key(0)), Account.from_key(anvil.private_key(1))
        client = ThresholdRecordClient.deploy(make_web3(anvil.url), owner, [sub.address], chain_id=anvil.chain_id)
        key_file = base / "submitter.key"
        key_file.write_text(anvil.private_key(1))
        key_file.chmod(0o600)
        cluster.admit_submitter("interop", anvil.private_key(1))
        etcd = etcd_server.endpoints[0].removeprefix("http://")
        with open(base / "submitter.log", "ab") as out:
            submitter = subprocess.Popen(
                [sys.executable, "-m", "submitter", "--dsn", dsn, "--etcd", etcd, "--etcd-prefix", prefix,
                 "--rpc", anvil.url, "--contract", client.address, "--key-file", str(key_file),
                 "--chain-id", str(anvil.chain_id), "--confirmations", "0", "--name", "interop"],
                env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=out, stderr=subprocess.STDOUT)
        w = World(dsn, owner_dsn, cluster, anvil, client, submitter, base, keys)
        # every node lets the js members in once it has followed the admission
        wait_for(lambda: all(c.get("allowlist_updates", 0) >= 1 for c in w.counters()), 20, "allowlists")
        yield w
    finally:
        for p in (w.peers if "w" in locals() else []):
            p.close()
        if submitter is not None:
            submitter.terminate()
            try:
                submitter.wait(10)
            except subprocess.TimeoutExpired:
                submitter.kill()
        cluster.stop()
        anvil.close()
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pub(key_file: Path) -> bytes:
    import nacl.signing

    return bytes(nacl.signing.SigningKey(load_seed(key_file)).verify_key)
