"""A trustee's libp2p peer id, derived from its Ed25519 vote key (R1: the admitted triple must agree).

A trustee signs votes and its gossip envelopes with one key (docs/decisions.md), so its peer id is
a function of its vote key: the identity multihash of the libp2p protobuf encoding of the public key
(``0x08 0x01`` Ed25519, ``0x12 0x20`` 32 bytes), in base58btc, as py-libp2p's ``ID.from_pubkey``
computes it. Pure: no libp2p import, so the decider can check an admission.
"""

from __future__ import annotations

from events.errors import InvalidCommand

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_ED25519_PROTO = b"\x08\x01\x12\x20"  # PublicKey{Type: Ed25519, Data: <32 bytes>}
_IDENTITY = b"\x00"  # multihash "identity": keys this short are inlined, not hashed


def peer_id_bytes(vote_key: bytes) -> bytes:
    """The binary peer id (what a gossip envelope's ``from`` field holds)."""
    if not isinstance(vote_key, bytes) or len(vote_key) != 32:
        raise InvalidCommand("a vote key is a 32-byte Ed25519 public key")
    proto = _ED25519_PROTO + vote_key
    return _IDENTITY + bytes([len(proto)]) + proto


def peer_id_of(vote_key: bytes) -> str:
    raw = peer_id_bytes(vote_key)
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def check_peer_id(peer_id: object, vote_key: bytes) -> str:
    """The peer id, if it is the one ``vote_key`` derives; else a clear InvalidCommand."""
    expected = peer_id_of(vote_key)
    if peer_id != expected:
        raise InvalidCommand(f"peer id {str(peer_id)[:80]!r} is not the libp2p id of vote key {vote_key.hex()} "
                             f"(a trustee's peer id derives from its key: {expected})")
    return expected
