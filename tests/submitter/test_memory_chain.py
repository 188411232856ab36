"""The submitter through the chain port alone: the real log and etcd, the scripted in-memory chain.

The loop never reaches past `chain.port.ChainPort`, so `chain.memory.MemoryChain` can stand in for the
node: mining is stepped by the test (confirmations are counted with the port's `block_number`), one
broadcast is lost on the way, and the chain is unreachable for a while. Everything is still written once,
from the raw transactions the log holds, and the chain audit agrees.
"""

from __future__ import annotations

import time

from eth_account import Account

from chain.memory import MemoryChain
from devstack.anvil import dev_private_key
from events import rules
from events.postgres_store import PostgresStore
from recording.etcd_guard import EtcdGuard
from submitter.audit import audit_chain
from submitter.core import Submitter


def test_stepped_mining_a_lost_broadcast_and_an_outage(cluster):
    owner, key = Account.from_key(dev_private_key(0)), Account.from_key(dev_private_key(1))
    chain = MemoryChain(owner.address, [key.address], automine=False)
    tx_ids = ["tx_m1", "tx_m2", "tx_m3"]
    cluster.consensus(tx_ids)

    guard = EtcdGuard(cluster.etcd, cluster.prefix, "mem-sub")
    store = PostgresStore(cluster.database.app_dsn)
    signer = cluster.admit_submitter("mem-sub", dev_private_key(1))
    sub = Submitter(store, guard, chain, key, name="mem-sub", log_signer=signer, confirmations=2, lock_ttl=3,
                    stuck_after=0.3)
    try:
        chain.lose_next_sends(1)  # the first broadcast (nonce 0) never reaches the pool
        deadline = time.monotonic() + 30
        rounds = 0
        while not all(cluster.txs()[t].status == rules.CONFIRMED for t in tx_ids) and time.monotonic() < deadline:
            sub.run_once()
            rounds += 1
            if rounds == 20:
                chain.down_for(0.3)  # every call fails for a while; the loop backs off
            elif rounds % 3 == 0 and chain.reachable:
                chain.mine()
            time.sleep(0.01)
        txs = cluster.txs()
        assert all(txs[t].status == rules.CONFIRMED for t in tx_ids), {t: txs[t].status for t in tx_ids}
        assert audit_chain(store, chain).findings == []
    finally:
        sub.close()
        guard.close()
        store.close()

    assert {e.tx_id: 1 for e in chain.recorded_events()} == {t: 1 for t in tx_ids}
    assert len(chain.recorded_events()) == len(tx_ids)
    signed = cluster.events("SubmissionSigned")
    # the lost one was re-broadcast from the log, never signed at a new nonce (a fee bump under a slow
    # machine re-signs at the *same* nonce, R11: at most one of them can be mined)
    assert len({(s.tx_id, s.nonce) for s in signed}) == len(tx_ids) == len({s.nonce for s in signed})
    assert sub.stats["rebroadcast"] >= 1
    lost = next(e for e in signed if e.nonce == 0)
    assert bytes.fromhex(lost.tx_hash[2:]) in chain.sent
    for e in cluster.events("SubmissionConfirmed"):
        assert e.block_number == chain.record_of(e.tx_id).block_number
        assert chain.block_number() - e.block_number >= 2  # the configured depth, counted on the port
