"""Bounded memory, proved against the unbounded ledger: same verdicts, same events (issue: up for months).

A recorder that keeps only the last finished transaction in memory (``retain_final=1``) and one that keeps
everything are given the same commands, on two logs that start alike: every result must be the same,
status and events, and so must what a fresh follower folds from each log. Late votes on transactions that
left memory long ago (a repeat, a double vote, a minority vote) are judged as if they had never left.
"""

from __future__ import annotations

import pytest
from helpers import OPERATOR, SUBMITTER, admin, trustees
from hypothesis import given, settings
from hypothesis import strategies as st

from events import rules
from events.follow import AWAITING_CHAIN, Follower
from events.memory_store import MemoryStore
from recording.memory_guard import MemoryGuard
from recording.recorder import Recorder

TS = trustees(4)
RECORDER = trustees(5)[4]  # a member that records and never votes (a voter that equivocates is banned, R13)
TXS = [f"t{i}" for i in range(6)]

command = st.one_of(
    st.builds(lambda who, tx, value: TS[who].receive(tx, value, now=1000), st.integers(0, 3), st.sampled_from(TXS),
              st.integers(1, 2)),
    st.builds(lambda tx: rules.CheckDeadline(tx, 10**9), st.sampled_from(TXS)),
)


AS_A_NODE = rules.FINAL | AWAITING_CHAIN  # what a trustee node lets leave memory (node/service.py)


def pair(evictable: frozenset = rules.FINAL) -> tuple[Recorder, Recorder]:
    out = []
    for retain in (None, 1):
        store = MemoryStore()
        Recorder(store, MemoryGuard("op"), OPERATOR).execute(admin([*TS, RECORDER], 3, deadline_ms=100))
        out.append(Recorder(store, MemoryGuard("n"), RECORDER.signer, retain_final=retain, evictable=evictable))
    return out[0], out[1]


def outcome(results) -> list:
    return [(r.status, r.events, type(r.error).__name__ if r.error else None) for r in results]


@pytest.mark.parametrize("evictable", [rules.FINAL, AS_A_NODE], ids=["final", "awaiting-chain-too"])
@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(command, min_size=1, max_size=4), min_size=1, max_size=25))
def test_a_bounded_ledger_decides_exactly_as_an_unbounded_one(evictable, batches):
    full, bounded = pair(evictable)
    for batch in batches:
        known = {t for t in TXS if t in full.ledger.txs}
        cmds = [c for c in batch if not isinstance(c, rules.CheckDeadline) or c.tx_id in known]
        if cmds:
            assert outcome(bounded.execute(cmds)) == outcome(full.execute(cmds))
    assert len(bounded.ledger.txs) <= len(full.ledger.txs)
    folds = []
    for rec in (full, bounded):
        f = Follower(trust_own=False)
        f.feed(rec.store.read_all(limit=10**6))
        folds.append((f.ledger.cluster, f.ledger.txs))
    assert folds[0] == folds[1]


def test_a_late_double_vote_on_a_transaction_that_left_memory_is_caught_with_both_votes():
    _, bounded = pair()
    a, b, _, _ = TS
    bounded.execute([a.receive("old", 1), b.receive("old", 1), rules.CheckDeadline("old", 10**9)])  # EXPIRED
    for k in range(3):  # newer finished transactions push "old" out of memory
        bounded.execute([a.receive(f"n{k}", 1), rules.CheckDeadline(f"n{k}", 10**9)])
    assert "old" not in bounded.ledger.txs and bounded.follower.evicted.count >= 1
    (r,) = bounded.execute([b.receive("old", 2, ts=5)])
    kinds = [(e.TYPE, getattr(e, "kind", None)) for e in r.events]
    assert ("ViolationDetected", "DOUBLE_VOTING") in kinds and ("NodeBanned", None) in kinds
    violation = next(e for e in r.events if e.TYPE == "ViolationDetected")
    assert violation.evidence["first"]["value"] == 1 and violation.evidence["second"]["value"] == 2
    (again,) = bounded.execute([a.receive("old", 1, ts=9)])  # R3: the same vote again changes nothing
    assert again.status.value == "duplicate"


def test_consensus_waiting_for_the_chain_leaves_a_nodes_memory_and_its_submission_is_followed_as_before():
    """A node lets a consensus whose deadline fired leave memory while it waits for the chain (a submitter down
    for a day must not fill every node's memory); the submission steps written later bring it back."""
    full, bounded = pair(AS_A_NODE)
    a, b, c, _ = TS
    cmds = [a.receive("paid", 1), b.receive("paid", 1), c.receive("paid", 1), rules.CheckDeadline("paid", 10**9)]
    for k in range(3):  # newer finished transactions push "paid" out of memory
        cmds += [a.receive(f"n{k}", 1), rules.CheckDeadline(f"n{k}", 10**9)]
    for rec in (full, bounded):
        rec.execute(cmds)
    assert full.ledger.txs["paid"].status == rules.THRESHOLD_REACHED
    assert "paid" not in bounded.ledger.txs and "paid" in bounded.follower.evicted
    store = bounded.store
    Recorder(store, MemoryGuard("op2"), OPERATOR).execute(
        [rules.AdmitWriter(SUBMITTER.writer, "submitter", SUBMITTER.public_key, "op")])
    sub = Recorder(store, MemoryGuard("s"), SUBMITTER)
    steps = [rules.StartSubmission("paid", "sub-1", 7),
             rules.RecordSigned("paid", 7, 31337, "0x" + "aa" * 20, 0, "0x" + "bb" * 32, "0x" + "cc" * 40),
             rules.RecordBroadcast("paid", 7, "0x" + "bb" * 32),
             rules.RecordConfirmed("paid", 7, "0x" + "bb" * 32, 12)]
    assert all(r.error is None for r in sub.execute(steps)), sub.execute([])
    bounded.catch_up()
    unbounded = Follower(trust_own=False)
    unbounded.feed(store.read_all(limit=10**6))
    assert bounded.follower.voided == unbounded.voided == 0
    assert unbounded.ledger.txs["paid"].status == rules.CONFIRMED
    assert bounded.follower.reloaded >= 1 and bounded.ledger.txs["paid"] == unbounded.ledger.txs["paid"]
    (late,) = bounded.execute([TS[3].receive("paid", 2, ts=5)])  # a late minority vote, judged as ever
    assert ("ViolationDetected", "MINORITY_VOTE") in [(e.TYPE, getattr(e, "kind", None)) for e in late.events]
