"""Hypothesis properties of the pure decider: the seed's five (section 14.1) and the R-rules."""

from __future__ import annotations

import contextlib
from collections import Counter

from helpers import bootstrap, run
from hypothesis import given, settings
from hypothesis import strategies as st

from events import errors
from events import rules as r

TX = "tx"


@st.composite
def clusters(draw):
    n = draw(st.integers(1, 7))
    t = draw(st.integers(1, n))
    return n, t


@st.composite
def vote_streams(draw, max_dups: int = 3):
    """(n, t, deliveries): each member votes at most once (single value) or twice (equivocation),
    in any order, with duplicates."""
    n, t = draw(clusters())
    values = draw(st.lists(st.sampled_from([None, 1, 2, 3]), min_size=n, max_size=n))
    equivocate = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    deliveries = []
    for i, v in enumerate(values):
        if v is None:
            continue
        deliveries.append((i, v))
        if equivocate[i]:
            deliveries.append((i, v % 3 + 1))
    deliveries += draw(st.lists(st.sampled_from(deliveries), max_size=max_dups)) if deliveries else []
    order = draw(st.permutations(deliveries))
    return n, t, order


def play(n, t, deliveries):
    ledger, ts = bootstrap(n, t)
    out = []
    for i, v in deliveries:
        with contextlib.suppress(errors.BannedSender):  # R10: dropped at the edge
            out.extend(run(ledger, ts[i].receive(TX, v, ts=len(out))))
    return ledger, out


def verdict(ledger):
    """Final status and who is banned. Whether a ThresholdReached was recorded on the way to a
    Byzantine abort does depend on order (R6: decided by the event that makes it true)."""
    tx = ledger.txs.get(TX)
    banned = frozenset(n for n, m in ledger.cluster.members.items() if m.banned)
    value = tx.value if tx and tx.status not in (r.ABORTED_BYZANTINE, r.ABORTED_NO_QUORUM) else None
    return (tx.status if tx else None, value, banned)


@given(vote_streams())
@settings(max_examples=300, deadline=None)
def test_threshold_safety_and_uniformity(case):
    """Seed P4 + R6: consensus only with >= t accepted votes for one value and none for another."""
    n, t, deliveries = case
    _, events = play(n, t, deliveries)
    reached = [e for e in events if isinstance(e, r.ThresholdReached)]
    assert len(reached) <= 1  # at most one ThresholdReached per transaction
    for th in reached:
        before = events[: events.index(th)]
        accepted = [e for e in before if isinstance(e, r.VoteAccepted)]
        assert sum(1 for e in accepted if e.value == th.value) >= t
        assert all(e.value == th.value for e in accepted)
        assert len(th.voters) >= t


@given(vote_streams())
@settings(max_examples=300, deadline=None)
def test_double_vote_and_minority_are_banned(case):
    """Seed P2/P3, R4/R5: equivocators are banned; if a value holds >= t, every dissenter is banned."""
    n, t, deliveries = case
    ledger, _ = play(n, t, deliveries)
    sent = {}
    for i, v in deliveries:
        sent.setdefault(i, set()).add(v)
    accepted = {n_: e.value for n_, e in ledger.txs[TX].votes.items()} if TX in ledger.txs else {}
    counts = Counter(accepted.values())
    for i, vs in sent.items():
        node = f"node-{i + 1}"
        member = ledger.cluster.members[node]
        if len(vs) > 1 and node in accepted:
            assert member.banned, "an equivocator whose first vote was accepted must be banned"
    if counts and max(counts.values()) >= t and ledger.txs[TX].value is not None:
        w = ledger.txs[TX].value
        for node, v in accepted.items():
            if v != w:
                assert ledger.cluster.members[node].banned


@given(vote_streams())
@settings(max_examples=300, deadline=None)
def test_honest_consensus_voters_never_banned(case):
    """No member that sent only one value, the consensus one, is ever banned."""
    n, t, deliveries = case
    ledger, _ = play(n, t, deliveries)
    w = ledger.txs[TX].value if TX in ledger.txs else None
    sent = {}
    for i, v in deliveries:
        sent.setdefault(i, set()).add(v)
    for i, vs in sent.items():
        if w is not None and vs == {w}:
            assert not ledger.cluster.members[f"node-{i + 1}"].banned


@given(vote_streams(), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_order_and_duplication_do_not_change_the_verdict(case, rnd):
    """R3-R6: for the same votes, any delivery order and any duplication give the same verdict."""
    n, t, deliveries = case
    if any(len({v for j, v in deliveries if j == i}) > 1 for i, _ in deliveries):
        return  # with equivocation, which vote is "first" is order by definition (R4)
    support = Counter(v for _, v in set(deliveries))
    if sum(1 for c in support.values() if c >= t) > 1:
        return  # two values each reach t: whichever gets there first wins (R6 "decided by the event")
    shuffled = list(deliveries) + list(deliveries[: rnd.randint(0, len(deliveries))])
    rnd.shuffle(shuffled)
    assert verdict(play(n, t, deliveries)[0]) == verdict(play(n, t, shuffled)[0])


@given(vote_streams())
@settings(max_examples=200, deadline=None)
def test_idempotent_redelivery(case):
    """Seed P1, R3: delivering every vote again emits nothing new."""
    n, t, deliveries = case
    ledger, _ = play(n, t, deliveries)
    ts = bootstrap(n, t)[1]
    for i, v in deliveries:
        tx = ledger.txs[TX]
        if ledger.cluster.members[f"node-{i + 1}"].banned:
            continue  # R10: dropped at the edge instead
        if tx.votes.get(f"node-{i + 1}") is not None and tx.votes[f"node-{i + 1}"].value == v:
            assert ledger.decide(ts[i].receive(TX, v, ts=12345)) == []


@given(vote_streams(), st.integers(1, 3))
@settings(max_examples=200, deadline=None)
def test_abort_is_final_and_never_submitted(case, rev):
    """R8: after an abort nothing reaches consensus or submission, whatever arrives later."""
    n, t, deliveries = case
    ledger, events = play(n, t, deliveries)
    aborted = [k for k, e in enumerate(events) if isinstance(e, r.TransactionAborted)]
    if not aborted:
        return
    assert len(aborted) == 1
    later = events[aborted[0] + 1:]
    assert not any(isinstance(e, r.ThresholdReached | r.SubmissionStarted) for e in later)
    try:
        ledger.decide(r.StartSubmission(TX, "s", rev))
    except errors.NotSubmittable:
        pass
    else:
        raise AssertionError("an aborted transaction was claimed for submission")


@given(vote_streams())
@settings(max_examples=200, deadline=None)
def test_replay_equals_live(case):
    """R12: folding the recorded events from scratch rebuilds exactly the live decision state."""
    n, t, deliveries = case
    ledger, events = play(n, t, deliveries)
    replayed = r.Ledger()
    for e in _bootstrap_events(n, t) + events:
        replayed.apply(e)
    assert replayed.cluster == ledger.cluster
    assert replayed.txs == ledger.txs


def _bootstrap_events(n, t):
    from helpers import trustees

    ledger = r.Ledger()
    out = []
    for tr in trustees(n):
        out += run(ledger, r.AdmitMember(tr.node_id, tr.vote_key, tr.peer_id, "op"))
    out += run(ledger, r.Configure(t, "op"))
    return out


@given(vote_streams(), st.integers(0, 100_000))
@settings(max_examples=200, deadline=None)
def test_deadline_fires_once(case, now):
    n, t, deliveries = case
    ledger, _ = play(n, t, deliveries)
    if TX not in ledger.txs:
        return
    first = run(ledger, r.CheckDeadline(TX, 10**9))
    assert sum(isinstance(e, r.DeadlinePassed) for e in first) == 1
    assert run(ledger, r.CheckDeadline(TX, 10**9 + now)) == []
