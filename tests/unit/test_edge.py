"""The node's network edge (the gossip validator): one test per kind of bad input (issue 5).

Runs the real validator with real signatures over a ledger from the pure core; no host needed.
"""

from __future__ import annotations

import json

import pytest
from helpers import bootstrap, run, trustees, unstarted_node

from events import rules
from events.envelope import build
from events.vote import SignedVote, Vote, sign
from node import wire
from recording.recorder import now_ms


@pytest.fixture
def edge(tmp_path):
    ledger, ts = bootstrap(4, 3)
    return unstarted_node(tmp_path, ledger), ledger, ts


def vote(t, tx="tx", value=1, ts=None):
    return sign(Vote(tx, value, t.node_id, now_ms() if ts is None else ts), t.key)


def test_a_valid_batch_passes_and_is_forwarded(edge):
    node, _, ts = edge
    assert node._validate(ts[1].peer_id, wire.encode([vote(ts[1]), vote(ts[2])]))
    assert node.inbox.empty()  # delivered later through the host, not through the side channel


@pytest.mark.parametrize("payload", [
    b"\x00\xff garbage", b"", b"[]", b'{"v": 2, "votes": []}', b'{"v": 1, "votes": []}',
    b"x" * (wire.MAX_BYTES + 1),
    json.dumps({"v": 1, "votes": [{"tx_id": "bad id!", "value": 1, "node_id": "node-2", "timestamp_ms": 1,
                                   "signature": "00" * 64}]}).encode(),
    json.dumps({"v": 1, "votes": [{"tx_id": "tx", "value": 2**64, "node_id": "node-2", "timestamp_ms": 1,
                                   "signature": "00" * 64}]}).encode(),
])
def test_garbage_is_dropped_and_counted(edge, payload):
    node, _, ts = edge
    assert not node._validate(ts[1].peer_id, payload)
    assert node.counters.snapshot() == {"dropped_garbage": 1}
    assert node.inbox.empty()


def test_outsider_author_is_dropped_counted_never_logged(edge):
    node, _, ts = edge
    assert not node._validate("12D3KooWoutsider", wire.encode([vote(ts[1])]))
    assert node.counters.snapshot() == {"dropped_outsider": 1}
    assert node.inbox.empty()


def test_vote_signed_by_a_non_member_is_dropped(edge):
    node, _, ts = edge
    stranger = trustees(9)[8]
    assert not node._validate(ts[1].peer_id, wire.encode([vote(stranger)]))
    assert node.counters.snapshot() == {"dropped_outsider": 1}


def test_banned_author_is_dropped(edge):
    node, ledger, ts = edge
    run(ledger, ts[3].receive("t1", 1))
    run(ledger, ts[3].receive("t1", 2))  # double vote: node-4 banned
    assert not node._validate(ts[3].peer_id, wire.encode([vote(ts[3])]))
    assert node.counters.snapshot() == {"dropped_banned": 1}


@pytest.mark.parametrize("offset_ms", [-301_000, -10**9, 31_000])
def test_replayed_old_or_future_votes_are_dropped(edge, offset_ms):
    node, _, ts = edge
    assert not node._validate(ts[1].peer_id, wire.encode([vote(ts[1], ts=now_ms() + offset_ms)]))
    assert node.counters.snapshot() == {"dropped_stale": 1}


def test_skew_of_five_seconds_is_accepted(edge):
    node, _, ts = edge
    assert node._validate(ts[1].peer_id, wire.encode([vote(ts[1], ts=now_ms() + 5000)]))
    assert node._validate(ts[1].peer_id, wire.encode([vote(ts[2], ts=now_ms() - 5000)]))


def test_forged_signature_is_not_forwarded_but_handed_on_for_r7(edge):
    node, _, ts = edge
    v = Vote("tx", 1, ts[0].node_id, now_ms())
    forged = SignedVote(v, sign(v, ts[2].key).signature)  # node-3's key, node-1's name
    payload = wire.encode([forged])
    env = build(ts[2].key, payload, b"\0" * 8, "votes")  # what node-3's router signed and ours checked
    assert not node._validate(ts[2].peer_id, payload, lambda: (env.signed, env.signature))
    assert node.counters.snapshot() == {"invalid_signature": 1}
    author, sv, proof = node.inbox.get_nowait()
    assert author == ts[2].peer_id and sv == forged and proof == env  # the decider will blame node-3's peer (R7)
    events = run(node.recorder.ledger, rules.ReceiveVote(sv, author, now_ms(), proof))
    assert [(e.TYPE, getattr(e, "node_id", None)) for e in events][:2] == [
        ("ViolationDetected", "node-3"), ("NodeBanned", "node-3")]


def test_an_accepted_batch_is_parsed_once_delivery_takes_the_edges_votes(edge):
    """Issue 15: delivery takes the votes the edge parsed; a rejected batch leaves nothing behind."""
    node, _, ts = edge
    good = wire.encode([vote(ts[1]), vote(ts[2], tx="tx2")])
    bad = wire.encode([vote(ts[1], tx="old", ts=now_ms() - 10 * node.cfg.max_vote_age_ms)])
    assert node._validate(ts[1].peer_id, good)
    assert not node._validate(ts[1].peer_id, bad)
    assert list(node._parsed) == [good]
    assert node._parsed[good] == wire.decode(good)
    node._deliver(ts[1].peer_id, good)
    assert not node._parsed
    got = [node.inbox.get_nowait() for _ in range(2)]
    assert [(a, sv, env) for a, sv, env in got] == [(ts[1].peer_id, sv, None) for sv in wire.decode(good)]


def test_delivery_parses_what_the_edge_did_not_and_never_blocks(edge):
    node, _, ts = edge
    node._deliver(ts[1].peer_id, b"garbage")
    assert node.counters.snapshot() == {"dropped_garbage": 1}
    import queue
    node.inbox = queue.Queue(maxsize=1)
    node._deliver(ts[1].peer_id, wire.encode([vote(ts[1]), vote(ts[2])]))  # one fits, one is counted
    assert node.inbox.qsize() == 1 and node.counters.snapshot()["delivery_inbox_full"] == 1


def test_the_edges_parsed_votes_are_bounded(edge):
    node, _, ts = edge
    for k in range(4100):
        assert node._validate(ts[1].peer_id, wire.encode([vote(ts[1], tx=f"t{k}")]))
    assert len(node._parsed) <= 4096


@pytest.mark.parametrize(("members", "want"), [(1, 50.0), (4, 50.0), (10, 125.0), (100, 500.0)])
def test_the_publish_interval_grows_with_the_committee(members, want):
    assert wire.publish_interval_ms(wire.PUBLISH_INTERVAL_MS, wire.PUBLISH_INTERVAL_PER_MEMBER_MS, members) == want
    assert wire.publish_interval_ms(20.0, 0.0, members) == 20.0  # per member 0: the fixed interval


def test_each_vote_accepted_at_the_edge_is_timed_in_the_reception_histogram(edge):
    """Seed 11.1's vote reception (signed -> accepted at our edge), exported under this node's label."""
    from observability.metrics import METRICS

    node, _, ts = edge

    def count() -> float:
        return sum(s.value for m in METRICS.vote_reception.collect() for s in m.samples
                   if s.name.endswith("_count") and s.labels.get("node") == node.cfg.node_id)

    before = count()
    assert node._validate(ts[1].peer_id, wire.encode([vote(ts[1]), vote(ts[2], ts=now_ms() - 40)]))
    assert count() == before + 2
    assert len(node.reception) == 2 and max(node.reception) >= 40
