"""SIGKILL the submitter process at every step boundary, restart it: exactly one write per tx (R11).

Each case uses the process's own failpoint (``--crash-at``), so the kill lands exactly on the boundary:
after SubmissionStarted, after signing (not yet logged), after SubmissionSigned (not yet broadcast),
after the broadcast (not yet logged), after SubmissionBroadcast (receipt not yet seen), after the
receipt (SubmissionConfirmed not yet logged), after SubmissionConfirmed (lock not released). A
restart must finish every transaction without a second on-chain write and, where a raw transaction
was logged, without signing a new one.
"""

from __future__ import annotations

import random
import time

import pytest
from submitter_harness import all_confirmed, wait_until

from events import rules

TXS = [f"tx_c{i}" for i in range(3)]


def _types_by_tx(cluster, type_: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in cluster.events(type_):
        out[e.tx_id] = out.get(e.tx_id, 0) + 1
    return out


@pytest.mark.parametrize("point", ["started", "signed-locally", "signed", "sent", "broadcast", "mined", "confirmed"])
def test_sigkill_at_each_step_boundary_then_restart(cluster, chain, spawn, point):
    cluster.consensus(TXS)
    first = spawn("--crash-at", point)
    assert first.popen.wait(30) == -9, first.output()[-3000:]
    on_chain_before = chain.recorded()
    signed_before = _types_by_tx(cluster, "SubmissionSigned")
    if point in ("started", "signed-locally", "signed"):
        assert on_chain_before == {}  # nothing was broadcast before the kill
    if point == "started":
        assert len(cluster.events("SubmissionStarted")) == 3 and signed_before == {}
    if point == "signed-locally":
        assert signed_before == {}  # signed in memory only: lost with the process (R11: never broadcast)
    if point == "signed":
        assert signed_before == {t: 1 for t in TXS}

    second = spawn()  # a fresh process (new lease): waits out the dead one's lock TTL, then recovers
    wait_until(all_confirmed(cluster, TXS), 40, f"recovery after a kill at {point}", second)
    assert chain.recorded() == {t: 1 for t in TXS}
    signed_after = _types_by_tx(cluster, "SubmissionSigned")
    if point in ("signed", "sent", "broadcast", "mined", "confirmed"):
        # the logged raw transaction was re-broadcast or looked up, never re-signed
        assert signed_after == {t: 1 for t in TXS}, cluster.events("SubmissionSigned")
    confirmed = {e.tx_id: e.tx_hash for e in cluster.events("SubmissionConfirmed")}
    signed = {e.tx_hash for e in cluster.events("SubmissionSigned")}
    assert set(confirmed.values()) <= signed
    for t in TXS:  # every claim of a transaction is a newer fencing token than the one before
        revs = [e.lock_revision for e in cluster.events("SubmissionStarted") if e.tx_id == t]
        assert revs == sorted(set(revs)), revs
    nonces = [(e.sender, e.nonce, e.tx_id) for e in cluster.events("SubmissionSigned")]
    assert len({(s, n) for s, n, _ in nonces}) == len({(s, n, t) for s, n, t in nonces})  # one tx per nonce
    assert chain.audit(cluster) == []


def test_repeated_external_sigkills_under_load(cluster, chain, spawn):
    """Kill -9 at random moments while 30 transactions flow; after a clean run all are written once."""
    rng = random.Random(6)
    tx_ids = [f"tx_k{i}" for i in range(30)]
    for k in range(3):
        cluster.consensus(tx_ids[k * 10:(k + 1) * 10])
        p = spawn()
        time.sleep(rng.uniform(0.3, 1.2))
        p.kill()
    final = spawn()
    wait_until(all_confirmed(cluster, tx_ids), 50, "all confirmed after repeated kills", final)
    recorded = chain.recorded()
    assert recorded == {t: 1 for t in tx_ids}
    assert all(cluster.txs()[t].status == rules.CONFIRMED for t in tx_ids)
    assert chain.audit(cluster) == []
