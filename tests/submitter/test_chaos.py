"""Three submitters in one process race for 40 transactions while their leases are revoked at random
(as when a holder pauses past its TTL): the fencing token, the nonce CAS and the contract keep it to one
write per transaction, every transaction is written, and no nonce serves two transactions."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time

from submitter_harness import all_confirmed

from devstack.anvil import rpc
from events import rules


def test_racing_submitters_with_random_lease_loss(cluster, chain, make_submitter):
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "42")))
    rpc(chain.node.url, "evm_setAutomine", [False])
    rpc(chain.node.url, "evm_setIntervalMining", [1])  # a block a second: holders are mid-flight when hit
    subs = [make_submitter(f"sub-{i}", lock_ttl=3, stuck_after=1.0) for i in range(3)]
    tx_ids = [f"tx_z{i}" for i in range(40)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop(sub) -> None:
        while not stop.is_set():
            try:
                if not sub.run_once():
                    time.sleep(0.005)
            except BaseException as e:  # reported by the test
                errors.append(e)
                return

    threads = [threading.Thread(target=loop, args=(s,), daemon=True) for s in subs]
    for t in threads:
        t.start()
    revoked = stolen = 0
    try:
        for k in range(4):
            cluster.consensus(tx_ids[k * 10:(k + 1) * 10])
            for _ in range(3):
                time.sleep(rng.uniform(0.2, 0.6))
                victim = rng.choice(subs)
                if rng.random() < 0.5:
                    with contextlib.suppress(Exception):  # it may still be on the lease we revoked before
                        victim.locks.lease.revoke()  # it notices at its next keep-alive and drops its claims
                    revoked += 1
                else:  # its lock keys vanish but it does not know: only the log's fencing stops it
                    for tx_id in list(victim.work):
                        victim.locks.client.delete(victim.locks.key(tx_id))
                    stolen += 1
        deadline = time.monotonic() + 40
        while not all_confirmed(cluster, tx_ids)() and time.monotonic() < deadline and not errors:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors
    assert all_confirmed(cluster, tx_ids)(), {t: cluster.txs()[t].status for t in tx_ids}
    assert chain.recorded() == {t: 1 for t in tx_ids}
    assert chain.audit(cluster) == []
    owners: dict[tuple[str, int], set[str]] = {}
    for e in cluster.events("SubmissionSigned"):
        owners.setdefault((e.sender, e.nonce), set()).add(e.tx_id)
    assert all(len(v) == 1 for v in owners.values()), owners
    stale = sum(s.stats["stale"] for s in subs)
    starts = len(cluster.events("SubmissionStarted"))
    signed = len(cluster.events("SubmissionSigned"))
    print(f"revoked={revoked} stolen={stolen} starts={starts} stale={stale} signed={signed}")
    assert all(cluster.txs()[t].status == rules.CONFIRMED for t in tx_ids)
