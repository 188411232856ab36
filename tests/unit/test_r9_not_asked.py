"""R9/R14: a member that was not eligible when a transaction opened was never asked about it.

Silence is judged at the deadline, but only against members eligible both when the transaction
opened and at its deadline: one admitted, or unbanned, in between is not SILENT on it. Its vote,
if it sends one, still counts.
"""

from __future__ import annotations

from helpers import run, trustees

from events import rules as r
from events.model import ReputationChanged, ViolationDetected
from events.vocab import ViolationKind


def _cluster(members, t):
    ledger = r.Ledger()
    for tr in members:
        run(ledger, r.AdmitMember(tr.node_id, tr.vote_key, tr.peer_id, "op"))
    run(ledger, r.Configure(t, "op", deadline_ms=100))
    return ledger


def _silent(events) -> list[str]:
    return [e.node_id for e in events if isinstance(e, ViolationDetected) and e.kind == ViolationKind.SILENT_FAILURE]


def test_a_member_admitted_after_a_transaction_opened_is_not_silent_on_it():
    ts = trustees(4)
    ledger = _cluster(ts[:3], 2)
    run(ledger, ts[0].receive("tx", 7, now=0))
    run(ledger, r.AdmitMember(ts[3].node_id, ts[3].vote_key, ts[3].peer_id, "op"))
    run(ledger, ts[1].receive("tx", 7, now=1))
    events = run(ledger, r.CheckDeadline("tx", 100))
    assert _silent(events) == ["node-3"]  # asked and silent; node-4 was not a member when tx opened
    assert ledger.cluster.members["node-4"].reputation == r.FULL_REPUTATION
    # and the next transaction, opened after its admission, does ask it
    run(ledger, ts[0].receive("tx2", 7, now=200))
    run(ledger, ts[1].receive("tx2", 7, now=201))
    assert _silent(run(ledger, r.CheckDeadline("tx2", 300))) == ["node-3", "node-4"]


def test_a_member_unbanned_after_a_transaction_opened_is_not_silent_on_it():
    ts = trustees(4)
    ledger = _cluster(ts, 2)
    run(ledger, ts[3].receive("tx0", 1, now=0))
    run(ledger, ts[3].receive("tx0", 2, now=0, ts=2))  # a double vote: node-4 banned
    assert ledger.cluster.members["node-4"].banned
    run(ledger, ts[0].receive("tx", 7, now=0))
    run(ledger, r.Unban("node-4", "op", "cleared"))
    run(ledger, ts[1].receive("tx", 7, now=1))
    events = run(ledger, r.CheckDeadline("tx", 100))
    assert _silent(events) == ["node-3"]
    assert not any(isinstance(e, ReputationChanged) and e.node_id == "node-4" for e in events)


def test_a_vote_from_a_member_admitted_later_still_counts():
    ts = trustees(3)
    ledger = _cluster(ts[:2], 2)
    run(ledger, ts[0].receive("tx", 7, now=0))
    run(ledger, r.AdmitMember(ts[2].node_id, ts[2].vote_key, ts[2].peer_id, "op"))
    run(ledger, ts[2].receive("tx", 7, now=1))
    assert ledger.txs["tx"].value == 7
