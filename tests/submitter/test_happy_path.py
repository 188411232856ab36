"""The submitter as an OS process, no faults: every consensus value lands once, with the log's certificate."""

from __future__ import annotations

import time

from submitter_harness import all_confirmed, wait_until

from devstack.anvil import rpc
from events import rules


def test_every_consensus_tx_is_written_once_with_the_logs_certificate(cluster, chain, spawn):
    tx_ids = [f"tx_{i}" for i in range(5)]
    cluster.consensus(tx_ids)
    proc = spawn()
    wait_until(all_confirmed(cluster, tx_ids), 30, "all confirmed", proc)
    assert chain.recorded() == {t: 1 for t in tx_ids}
    certs = {e.tx_id: e.certificate_hash for e in cluster.events("ThresholdReached")}
    for t in tx_ids:
        rec = chain.client.record_of(t)
        assert rec.value == cluster.txs()[t].value
        assert rec.certificate_hash.hex() == certs[t]  # BLAKE3 from the log, not a keccak of it
    signed = cluster.events("SubmissionSigned")
    assert len({(e.chain_id, e.sender, e.nonce) for e in signed}) == len(signed) == 5
    # later consensus is picked up by the running process
    cluster.consensus(["tx_late"])
    wait_until(all_confirmed(cluster, ["tx_late"]), 20, "late tx confirmed", proc)
    assert chain.recorded()["tx_late"] == 1
    assert cluster.txs()["tx_late"].status == rules.CONFIRMED
    assert chain.audit(cluster) == []


def test_confirmation_waits_for_the_configured_depth(cluster, chain, spawn):
    cluster.consensus(["tx_deep"])
    proc = spawn("--confirmations", "2")
    wait_until(lambda: cluster.events("SubmissionBroadcast"), 20, "broadcast", proc)
    wait_until(lambda: chain.recorded() == {"tx_deep": 1}, 10, "mined", proc)
    mined_at = chain.client.record_of("tx_deep").block_number
    rpc(chain.node.url, "evm_mine", [])
    time.sleep(0.5)
    assert cluster.txs()["tx_deep"].status == rules.SUBMITTING  # one block on top is not enough
    rpc(chain.node.url, "evm_mine", [])
    wait_until(all_confirmed(cluster, ["tx_deep"]), 10, "confirmed at depth 2", proc)
    (confirmed,) = cluster.events("SubmissionConfirmed")
    assert confirmed.block_number == mined_at
