"""The independent JavaScript audit (interop/js/audit.mjs) agrees with ``tvote audit verify`` / ``audit chain``.

On the live log of ``world`` (Python and js trustees, a forger banned, consensus transactions written on chain
by the submitter) both must say OK; on a copy of that log with planted bad rows both must fail and name the
same positions; against a contract that holds none of the log's records both must fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import psycopg
from eth_account import Account
from helpers import forge_row, wait_for
from interop_world import SRC
from jsrun import run_js
from services import TEMPLATE

from chain import ThresholdRecordClient, make_web3
from events.model import NodeBanned
from tvote import db

TVOTE = [sys.executable, "-c", "from tvote.cli import app; app()"]


def tvote(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TVOTE, *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "300"})


def js_audit(dsn: str, *chain: str) -> tuple[int, dict, str]:
    r = run_js("audit.mjs", "--dsn", dsn, *chain, "--json", timeout=180)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout), r.stderr


def head_at(dsn: str, position: int) -> str:
    with psycopg.connect(dsn) as c:
        return bytes(c.execute("SELECT hash FROM events WHERE position = %s", (position,)).fetchone()[0]).hex()


def test_js_audit_agrees_with_the_python_audit_on_a_live_log_and_chain(world):
    world.forge()  # so that the log holds a forgery of a js author (R7), whatever ran before
    js = world.peer("js-1")
    tx, value = "interop_audited", 2**64 - 1  # the largest value: exact through JSON, jsonb, both audits and the chain
    assert js.call(cmd="vote", tx_id=tx, value=str(value))["vote"]["value"] == value
    wait_for(lambda: "js-1" in (world.cluster.tx(0, tx) or {}).get("votes", {}), 15, "the js vote")
    wait_for(lambda: world.rows("NodeBanned"), 15, "the forger banned")
    for i in (0, 2):
        assert world.cluster.cast(i, tx, value)[0] == 202
    # every consensus of the log written on chain by the submitter
    wait_for(lambda: {r.payload["tx_id"] for r in world.rows("SubmissionConfirmed")} >= {
        r.payload["tx_id"] for r in world.rows("ThresholdReached")} >= {tx}, 60, "every consensus on chain")
    chain = ["--rpc", world.anvil.url, "--contract", world.client.address, "--chain-id", str(world.anvil.chain_id)]

    py = tvote("audit", "verify", "--dsn", world.dsn)
    assert py.returncode == 0 and "OK" in py.stdout, py.stdout + py.stderr
    py_chain = tvote("audit", "chain", "--dsn", world.dsn, *chain)
    assert py_chain.returncode == 0, py_chain.stdout + py_chain.stderr
    code, report, err = js_audit(world.dsn, *chain)
    assert code == 0 and report["ok"], (report["findings"][:5], report["chain"], err)
    assert report["findings"] == [] and report["chain"]["findings"] == []
    assert report["head"] == head_at(world.dsn, report["events"])  # it walked the whole chain to the head it read
    confirmed = {r.payload["tx_id"] for r in world.rows("SubmissionConfirmed")}
    assert report["chain"]["records"] == len(confirmed) >= 1 and report["chain"]["pending"] == 0
    # what it re-checked: js-1's accepted votes, js-3's forgery (its own js-libp2p envelope), the certificates
    kinds = {r.event_type for r in world.rows()}
    assert {"VoteAccepted", "ThresholdReached", "ViolationDetected", "NodeBanned", "SubmissionConfirmed"} <= kinds
    assert world.client.record_of(tx).value == value
    text = run_js("audit.mjs", "--dsn", world.dsn, *chain)
    assert text.returncode == 0 and "each a consensus of the log, once" in text.stdout, text.stdout

    # a contract that holds none of the log's records: both chain audits fail
    owner = Account.from_key(world.anvil.private_key(0))
    empty = ThresholdRecordClient.deploy(make_web3(world.anvil.url), owner, [], chain_id=world.anvil.chain_id)
    elsewhere = ["--rpc", world.anvil.url, "--contract", empty.address, "--chain-id", str(world.anvil.chain_id)]
    assert tvote("audit", "chain", "--dsn", world.dsn, *elsewhere).returncode == 1
    code, report, _ = js_audit(world.dsn, *elsewhere)
    assert code == 1 and any("confirmed in the log but no record on chain" in f for f in report["chain"]["findings"])


def test_js_audit_fails_on_planted_bad_rows_like_the_python_audit(world, pg_server):
    # a copy of the live log (the running cluster keeps its own), then two plants in the copy
    name = f"planted_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
    try:
        owner, app = pg_server.dsn(name), pg_server.dsn(name, user=db.APP_ROLE)
        with psycopg.connect(world.owner_dsn) as src, psycopg.connect(owner) as dst, \
                src.cursor().copy("COPY (SELECT * FROM events ORDER BY position) TO STDOUT (FORMAT BINARY)") as out, \
                dst.cursor().copy("COPY events FROM STDIN (FORMAT BINARY)") as into:
            for chunk in out:
                into.write(chunk)
        code, report, _ = js_audit(app)
        assert code == 0, report

        with psycopg.connect(owner) as c:
            # 1. an accepted vote of the js trustee edited after it was written (superuser, trigger off)
            c.execute("SET session_replication_role = replica")
            (edited,) = c.execute("SELECT position FROM events WHERE event_type = 'VoteAccepted' "
                                  "AND payload->>'node_id' = 'js-1' ORDER BY position LIMIT 1").fetchone()
            c.execute("UPDATE events SET payload = jsonb_set(payload, '{value}', '99') WHERE position = %s", (edited,))
        # 2. a correctly chained row nobody signed, as anyone holding the service role could INSERT it
        planted = forge_row(app, NodeBanned("trustee-1", world.cluster.trustees[0].peer_id, "DOUBLE_VOTING", "x"),
                             "trustee-2")

        py = tvote("audit", "verify", "--dsn", app)
        assert py.returncode == 1, py.stdout
        assert f"position {edited}" in py.stdout and f"position {planted}" in py.stdout, py.stdout
        code, report, _ = js_audit(app)
        assert code == 1 and not report["ok"]
        named = {f["position"]: f["problem"] for f in report["findings"]}
        assert "edited after it was written" in named[edited], report["findings"]
        assert "no writer signature covers" in named[planted], report["findings"]
        text = run_js("audit.mjs", "--dsn", app)
        assert text.returncode == 1 and f"position {planted}:" in text.stdout, text.stdout
    finally:
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
