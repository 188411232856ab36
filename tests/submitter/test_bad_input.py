"""Bad input: a clear error, nothing sent, nothing lost."""

from __future__ import annotations

import time

from eth_account import Account
from helpers import signer
from submitter_harness import all_confirmed, wait_until

from events import rules
from events.audit import verify
from events.errors import NotSubmittable
from events.model import ThresholdReached
from events.store import Unit


def _nonce(chain) -> int:
    return chain.client.pending_nonce(chain.sender)


def test_a_forged_consensus_event_is_void_and_nothing_is_sent_for_it(cluster, chain, spawn):
    """R13: a consensus event no admitted writer signed (an INSERT by anyone holding the role) is void."""
    ghost = ThresholdReached("tx_ghost", 5, ("node-1", "node-2"), "ab" * 32)
    cluster.recorder.store.append([Unit.of({"tx:tx_ghost": 0}, [ghost], {"type": "Reevaluate", "tx_id": "tx_ghost"})],
                                  signer("evil-node"))
    cluster.consensus(["tx_real"])
    proc = spawn()
    wait_until(all_confirmed(cluster, ["tx_real"]), 20, "the real tx", proc)
    assert chain.recorded() == {"tx_real": 1}
    assert [e.tx_id for e in cluster.events("SubmissionStarted")] == ["tx_real"]
    report = verify(cluster.recorder.store)
    assert [f.problem for f in report.integrity] == ["void, written as 'evil-node': 'evil-node' is not a writer "
                                                     "the log admitted"]


def test_aborted_and_expired_transactions_are_never_submitted(cluster, chain, spawn):
    m = cluster.members
    cluster.execute([m[0].receive("tx_abort", 5), m[1].receive("tx_abort", 5)])  # consensus on 5 ...
    assert cluster.txs()["tx_abort"].status == rules.THRESHOLD_REACHED
    cluster.execute([m[0].receive("tx_abort", 6)])  # ... then node-1 equivocates: aborted (R8)
    cluster.execute([m[2].receive("tx_exp", 1, now=0)])
    cluster.execute([rules.CheckDeadline("tx_exp", 10**12)])
    txs = cluster.txs()
    assert txs["tx_abort"].status == rules.ABORTED_BYZANTINE and txs["tx_exp"].status == rules.EXPIRED
    (res,) = cluster.execute([rules.StartSubmission("tx_abort", "sub-x", 10**9)])
    assert isinstance(res.error, NotSubmittable)  # the decider refuses a claim on it
    cluster.consensus(["tx_ok"])
    proc = spawn()
    wait_until(all_confirmed(cluster, ["tx_ok"]), 20, "tx_ok", proc)
    time.sleep(0.5)
    assert chain.recorded() == {"tx_ok": 1}
    assert [e.tx_id for e in cluster.events("SubmissionStarted")] == ["tx_ok"]


def test_a_forged_out_of_range_consensus_is_void_and_nothing_is_sent(cluster, chain, spawn):
    m = cluster.members
    cluster.execute([m[0].receive("tx_big", 1)])  # open, collecting; then a forged consensus event
    version = len(cluster.recorder.store.read_stream("tx:tx_big"))
    bad = ThresholdReached("tx_big", 2**64, ("node-1", "node-2"), "cd" * 32)
    cluster.recorder.store.append([Unit.of({"tx:tx_big": version}, [bad], {"type": "Reevaluate", "tx_id": "tx_big"})],
                                  signer("evil-node"))
    nonce = _nonce(chain)
    proc = spawn()
    cluster.consensus(["tx_first"])
    wait_until(all_confirmed(cluster, ["tx_first"]), 20, "tx_first", proc)
    assert cluster.txs()["tx_big"].status == rules.COLLECTING  # the forged consensus was never applied
    assert [e.tx_id for e in cluster.events("SubmissionStarted")] == ["tx_first"]
    assert chain.recorded() == {"tx_first": 1} and _nonce(chain) == nonce + 1
    # nothing lost: the next consensus still goes through
    cluster.consensus(["tx_after"])
    wait_until(all_confirmed(cluster, ["tx_after"]), 20, "tx_after", proc)
    assert chain.recorded() == {"tx_first": 1, "tx_after": 1}


def _refused(proc, text: str, cluster, chain, nonce: int) -> None:
    assert proc.popen.wait(30) == 2, proc.output()[-2000:]
    assert text in proc.output(), proc.output()[-2000:]
    assert "nothing sent" in proc.output()
    assert cluster.events("SubmissionStarted") == [] and chain.recorded() == {} and _nonce(chain) == nonce


def test_misconfigured_chain_id(cluster, chain, spawn):
    cluster.consensus(["tx_1"])
    _refused(spawn(chain_id=999), "misconfigured chain id: chain id is 31337, expected 999", cluster, chain,
             _nonce(chain))


def test_misconfigured_key(cluster, chain, spawn, tmp_path):
    cluster.consensus(["tx_1"])
    nonce = _nonce(chain)
    outsider = tmp_path / "outsider.key"
    outsider.write_text(chain.node.private_key(2))
    address = Account.from_key(chain.node.private_key(2)).address
    _refused(spawn(key_file=outsider), f"account {address} is not an authorised submitter", cluster, chain, nonce)
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    _refused(spawn(key_file=garbage), "cannot use the key", cluster, chain, nonce)


def test_misconfigured_contract_address(cluster, chain, spawn):
    cluster.consensus(["tx_1"])
    proc = spawn("--contract", chain.sender)  # an account, not the contract
    _refused(proc, "misconfigured contract", cluster, chain, _nonce(chain))


def test_an_etcd_that_does_not_answer_at_start_is_waited_for_then_named(cluster, chain, spawn):
    """It exited at once on the first failed etcd call (found on the namespace network with the etcd leader
    cut off); it now waits as it does for the chain, then says which endpoints did not answer (exit 3)."""
    cluster.consensus(["tx_1"])
    nonce = _nonce(chain)
    proc = spawn("--etcd", "127.0.0.1:1", "--startup-timeout", "3")
    assert proc.popen.wait(30) == 3, proc.output()[-2000:]
    assert "etcd unreachable at 127.0.0.1:1 for 3.0s" in proc.output(), proc.output()[-2000:]
    assert cluster.events("SubmissionStarted") == [] and chain.recorded() == {} and _nonce(chain) == nonce
