"""Bad input gets a clear typed error and changes nothing: one test per case (R2 bounds and more)."""

from __future__ import annotations

import pytest
from helpers import W, bootstrap, run, trustees

from events import errors, rules
from events.memory_store import MemoryStore
from events.model import CLUSTER_STREAM
from events.store import NewEvent, Unit
from events.upcast import decode, upcast
from events.vote import U64_MAX, SignedVote, Vote


@pytest.mark.parametrize(
    "args",
    [
        ("", 1, "n", 1),  # empty tx_id
        ("x" * 129, 1, "n", 1),  # tx_id over 128
        ("tx 1", 1, "n", 1),  # a space
        ("tx/1", 1, "n", 1),  # outside [A-Za-z0-9_.:-]
        ("tx\u00e9", 1, "n", 1),  # non-ASCII
        ("tx", -1, "n", 1),  # negative value
        ("tx", U64_MAX + 1, "n", 1),  # over u64
        ("tx", True, "n", 1),  # a bool is not a value
        ("tx", 1.0, "n", 1),  # nor is a float
        ("tx", "1", "n", 1),  # nor a string
        ("tx", 1, "", 1),  # empty node id
        ("tx", 1, "n" * 65, 1),  # node id over 64
        ("tx", 1, "n", -5),  # negative timestamp
    ],
)
def test_vote_bounds(args):
    with pytest.raises(errors.InvalidVote):
        Vote(*args)


def test_signing_bytes_are_unambiguous():
    a = Vote("tx_1", 23, "n", 1).signing_bytes()
    b = Vote("tx_12", 3, "n", 1).signing_bytes()
    assert a != b
    assert Vote("t", U64_MAX, "n", 0).signing_bytes() != Vote("t", 0, "n", U64_MAX).signing_bytes()


@pytest.mark.parametrize("sig", [b"", b"x" * 63, b"x" * 65, "ab" * 32])
def test_signature_shape(sig):
    with pytest.raises(errors.InvalidVote):
        SignedVote(Vote("tx", 1, "n", 1), sig)


@pytest.mark.parametrize(
    "data",
    [None, [], "x", {}, {"tx_id": "tx"}, {"tx_id": "tx", "value": 1, "node_id": "n", "timestamp_ms": 1,
                                         "signature": "zz"}],
)
def test_signed_vote_from_json_rejects_garbage(data):
    with pytest.raises(errors.InvalidVote):
        SignedVote.from_json(data)


def test_vote_signed_by_another_key_is_an_invalid_signature_not_an_accept():
    ledger, ts = bootstrap(3, 2)
    events = run(ledger, ts[1].forge(ts[0].node_id, "tx", 1, now=1))  # node-1's name, node-2's key and envelope
    assert [(e.TYPE, getattr(e, "node_id", None)) for e in events][:2] == [
        ("ViolationDetected", "node-2"), ("NodeBanned", "node-2")]
    assert "tx" not in ledger.txs


def test_a_forgery_blames_nobody_without_its_authors_envelope():
    """R7 + R14: a recorder's word that peer X sent a forged vote is not evidence; X's signed envelope is."""
    from events.envelope import Envelope

    ledger, ts = bootstrap(3, 2)
    before = (ledger.cluster, dict(ledger.txs))
    bare = ts[1].forge(ts[0].node_id, "tx", 1, envelope=False)
    framed = ts[1].forge(ts[0].node_id, "tx", 1)  # node-2 sent it; a Byzantine recorder says node-3 did
    other = ts[2].forge(ts[0].node_id, "tx", 1)
    cases = [bare, rules.ReceiveVote(framed.vote, ts[2].peer_id, 1, framed.envelope),
             rules.ReceiveVote(framed.vote, ts[1].peer_id, 1, Envelope(framed.envelope.signed, bytes(64))),
             rules.ReceiveVote(framed.vote, ts[1].peer_id, 1, other.envelope)]  # an envelope of another message
    for cmd in cases:
        with pytest.raises(errors.UnprovenForgery):
            ledger.decide(cmd)
        assert (ledger.cluster, ledger.txs) == before


@pytest.mark.parametrize(
    "cmd",
    [
        rules.ReceiveVote("not a vote", "peer-1", 1),
        rules.ReceiveVote(trustees(1)[0].vote("tx", 1), "peer-1", -1),
        rules.CheckDeadline("tx", 1),
        rules.CheckDeadline("bad id!", 1),
        rules.Reevaluate("nope"),
        rules.Unban("node-1", "op", "x"),
        rules.Unban("node-1", "", "x"),
        rules.RemoveMember("ghost", "op", "x"),
        rules.Configure(0, "op"),
        rules.Configure(2, "op", deadline_ms=0),
        rules.Configure(2, "op", reputation_floor=1001),
        rules.RecordSigned("tx", 1, 1, "s", 0, "h", "0x00"),
        rules.Configure(2, "op", participation_reward=-1),
        rules.Configure(2, "op", floor_ban_after=-1),
        # R1: the incident `tvote members add trustee-9 <key> bad-peer-0`: a peer id that is not the key's
        rules.AdmitMember("node-9", trustees(9)[8].vote_key, "bad-peer-0", "op"),
        rules.AdmitMember("node-9", trustees(9)[8].vote_key, trustees(9)[7].peer_id, "op"),
        rules.AdmitMember("node-9", b"short", "bad-peer-0", "op"),
    ],
)
def test_rejected_commands_change_nothing(cmd):
    ledger, _ = bootstrap(3, 2)
    before = (ledger.cluster, dict(ledger.txs))
    with pytest.raises(errors.CommandRejected):
        ledger.decide(cmd)
    assert (ledger.cluster, ledger.txs) == before


def test_votes_before_configuration_are_refused():
    ledger = rules.Ledger()
    with pytest.raises(errors.NotConfigured):
        ledger.decide(trustees(1)[0].receive("tx", 1))


def test_oversized_payload_is_refused_by_the_store():
    s = MemoryStore()
    big = NewEvent(CLUSTER_STREAM, "ClusterConfigured", 1, {"operator": "x" * 70_000}, "k")
    with pytest.raises(ValueError, match="payload over"):
        s.append([Unit({CLUSTER_STREAM: 0}, (big,))], W)
    assert s.last_position() == 0


def test_upcasting_reputation_v1_float_to_v2_milli_points():
    p = {"node_id": "n", "score": 0.9, "reason": "SILENT_FAILURE"}
    assert upcast("ReputationChanged", 1, p)["score"] == 900
    e = decode("ReputationChanged", 1, p)
    assert e.score == 900 and e.cause == "legacy"


@pytest.mark.parametrize(
    "etype,version,payload",
    [
        ("NoSuchEvent", 1, {}),
        ("ReputationChanged", 3, {"node_id": "n"}),  # from a newer writer
        ("VoteAccepted", 1, {"tx_id": "t"}),  # fields missing
        ("VoteAccepted", 1, {"tx_id": "t", "node_id": "n", "value": 1, "vote": {}, "author_peer": "p",
                             "extra": 1}),
    ],
)
def test_undecodable_events_raise_a_typed_error(etype, version, payload):
    with pytest.raises(errors.InvalidCommand):
        decode(etype, version, payload)


def test_a_peer_id_is_the_one_its_vote_key_derives():
    from events.identity import peer_id_of
    from node.p2p.identity import peer_id_from_seed

    for i in range(1, 6):
        seed = bytes([i]) * 32
        key = bytes(__import__("nacl.signing").signing.SigningKey(seed).verify_key)
        assert peer_id_of(key) == peer_id_from_seed(seed)  # the same id libp2p computes
    ledger, _ = bootstrap(3, 2)
    with pytest.raises(errors.InvalidCommand, match="derives from its key"):
        ledger.decide(rules.AdmitMember("node-9", trustees(9)[8].vote_key, "bad-peer-0", "op"))
