"""Patch 5 (node.p2p._patches.cached_signature_validator) answers exactly as libp2p's ``signature_validator``.

It skips re-deriving a sender's peer id from its key once that key has matched, so it is held to the
library's function on every kind of message a peer can send: signed as pubsub signs, tampered data,
topic, seqno or signature, no signature, another peer's id on a valid signature, a key field that
disagrees with the id, and each of those again once the sender's key is cached.
"""

from __future__ import annotations

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX, signature_validator

from node.p2p import _patches


def _signed(kp, data=b"vote", topic="tvote/votes/1", seqno=b"\0" * 8, from_kp=None) -> rpc_pb2.Message:
    sender = from_kp or kp
    msg = rpc_pb2.Message(data=data, topicIDs=[topic], from_id=ID.from_pubkey(sender.public_key).to_bytes(),
                          seqno=seqno)
    msg.signature = kp.private_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = kp.public_key.serialize()
    return msg


def _variants():
    a, b = create_new_key_pair(), create_new_key_pair()
    good = _signed(a)
    yield "signed as pubsub signs", good, True
    for field, value in (("data", b"other"), ("seqno", b"\1" * 8)):
        m = rpc_pb2.Message()
        m.CopyFrom(good)
        setattr(m, field, value)
        yield f"{field} changed after signing", m, False
    m = rpc_pb2.Message()
    m.CopyFrom(good)
    m.topicIDs[0] = "other"
    yield "topic changed after signing", m, False
    m = rpc_pb2.Message()
    m.CopyFrom(good)
    m.signature = bytes(64)
    yield "signature zeroed", m, False
    m = rpc_pb2.Message()
    m.CopyFrom(good)
    m.signature = b""
    yield "no signature", m, False
    yield "b's id on a's valid signature", _signed(a, from_kp=b), False
    m = _signed(a)
    m.key = b.public_key.serialize()
    yield "a key field that is not the id's key (the id's key is used)", m, True
    m = rpc_pb2.Message()
    m.CopyFrom(good)
    m.from_id = b"\x00\x01\x02"
    yield "a sender id that is not a peer id", m, False


@pytest.mark.parametrize("cached", [False, True], ids=["first sight", "key cached"])
def test_same_answer_as_the_library_for_every_kind_of_message(cached, monkeypatch):
    monkeypatch.setattr(_patches, "_sender_keys", {})
    for what, msg, expected in _variants():
        if cached:
            _patches.cached_signature_validator(_signed(create_new_key_pair()))  # unrelated senders in the cache
            good = rpc_pb2.Message()
            good.CopyFrom(msg)
            _patches.cached_signature_validator(good)  # this sender seen once
        try:
            want = signature_validator(msg)
        except Exception as e:  # the library raises for some malformed ids: so must the patch
            with pytest.raises(type(e)):
                _patches.cached_signature_validator(msg)
            continue
        assert _patches.cached_signature_validator(msg) is want, what
        assert want is expected, what


def test_the_cache_is_bounded_and_installed_where_pubsub_calls_it(monkeypatch):
    import libp2p.pubsub.pubsub as pubsub_mod

    assert _patches.install()
    assert pubsub_mod.signature_validator is _patches.cached_signature_validator
    monkeypatch.setattr(_patches, "_sender_keys", {})
    monkeypatch.setattr(_patches, "SENDER_KEYS_MAX", 3)
    for _ in range(10):
        assert _patches.cached_signature_validator(_signed(create_new_key_pair()))
        assert len(_patches._sender_keys) <= 3
