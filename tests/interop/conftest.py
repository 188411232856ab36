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
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from eth_account import Account
from helpers import wait_for
from interop_world import JS_MEMBERS, SRC, World, database_for, public_key
from jsrun import NodeMissing, check_installed

from chain import ThresholdRecordClient, make_web3
from devstack.anvil import Anvil, AnvilError, find_anvil
from devstack.operator import NAME as OPERATOR
from devstack.trustees import TrusteeCluster
from events import rules
from node.p2p.identity import generate_key_file, load_seed, peer_id_from_seed


@pytest.fixture(scope="package")
def world(pg_server, etcd_server, tmp_path_factory) -> Iterator[World]:
    try:
        check_installed()
        anvil_bin = find_anvil()
    except (NodeMissing, AnvilError) as e:
        pytest.fail(str(e), pytrace=False)
    base = tmp_path_factory.mktemp("interop")
    name, dsn, owner_dsn = database_for(pg_server)
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
        cluster.operate([rules.AdmitMember(js, public_key(keys[js]), peer_id_from_seed(load_seed(keys[js])), OPERATOR)
                         for js in JS_MEMBERS])
        members = [{"node_id": t.node_id, "public_key": t.vote_key.hex()} for t in cluster.trustees]
        members += [{"node_id": js, "public_key": public_key(keys[js]).hex()} for js in JS_MEMBERS]
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
        cluster.destroy()
        anvil.close()
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

