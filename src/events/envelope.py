"""The gossip envelope as evidence (R7): proof that a member peer authored a message.

R7 blames the libp2p peer that authored a forged vote, "whose envelope signature the router
verified". A router's check convinces only the node that ran it; a log that says "peer X sent this"
must carry the proof, or a Byzantine recorder could blame any honest member for a forgery it made
up. So an INVALID_SIGNATURE violation carries the author's signed envelope: the exact bytes
libp2p-pubsub signs (``"libp2p-pubsub:"`` + the protobuf ``Message{from, data, seqno, topicIDs}``)
and the signature. Anyone holding the log checks it with the author's key alone (a trustee's peer
id *is* its Ed25519 vote key, ``events.identity``), and that the forged vote is in the data the
author signed. An honest member only ever publishes votes it signed itself, so it can never be
shown authoring a forgery.

Pure: a few lines of protobuf wire format (fields 1-4, length-delimited), no libp2p import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from events.errors import InvalidCommand, ThresholdVoteError
from events.identity import peer_id_bytes
from events.vote import SignedVote

SIGNING_PREFIX = b"libp2p-pubsub:"
MAX_ENVELOPE = 600 * 1024  # a gossip payload is at most 512 KiB (node.wire.MAX_BYTES)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A signed pubsub message: ``signed`` is the protobuf Message without its key and signature."""

    signed: bytes
    signature: bytes

    def fields(self) -> dict[int, list[bytes]]:
        """The length-delimited fields of ``signed`` by number (1 from, 2 data, 3 seqno, 4 topic)."""
        out: dict[int, list[bytes]] = {}
        b, i = self.signed, 0
        while i < len(b):
            tag, i = _varint(b, i)
            if tag & 7 != 2:
                raise InvalidCommand("envelope: only length-delimited fields are expected")
            size, i = _varint(b, i)
            if i + size > len(b):
                raise InvalidCommand("envelope: a field runs past the end")
            out.setdefault(tag >> 3, []).append(b[i:i + size])
            i += size
        return out

    def author_bytes(self) -> bytes:
        return (self.fields().get(1) or [b""])[0]

    def data(self) -> bytes:
        return (self.fields().get(2) or [b""])[0]

    def verifies_under(self, public_key: bytes) -> bool:
        try:
            nacl.signing.VerifyKey(public_key).verify(SIGNING_PREFIX + self.signed, self.signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
            return False
        return True

    def to_json(self) -> dict[str, str]:
        return {"signed": self.signed.hex(), "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, data: object) -> Envelope:
        if not isinstance(data, dict) or set(data) != {"signed", "signature"}:
            raise InvalidCommand("an envelope is {signed, signature} in hex")
        try:
            env = cls(bytes.fromhex(data["signed"]), bytes.fromhex(data["signature"]))
        except (TypeError, ValueError):
            raise InvalidCommand("an envelope is {signed, signature} in hex") from None
        if len(env.signature) != 64 or len(env.signed) > MAX_ENVELOPE:
            raise InvalidCommand("an envelope's signature is 64 bytes and its message at most 600 KiB")
        return env


def vote_bytes(vote_json: dict) -> bytes:
    """A signed vote as it travels inside a gossip batch (``node.wire.encode``: sorted keys, compact)."""
    return json.dumps(vote_json, sort_keys=True, separators=(",", ":")).encode()


def authored(envelope: Envelope, author_key: bytes, author_id: bytes, vote_json: dict) -> str | None:
    """None when the envelope proves ``author`` sent ``vote_json``; else why it does not."""
    if not envelope.verifies_under(author_key):
        return "the envelope's signature is not the author's"
    try:
        if envelope.author_bytes() != author_id:
            return "the envelope names another author"
        data = envelope.data()
        if vote_bytes(vote_json) not in data and not any(_same(v, vote_json) for v in _votes_in(data)):
            return "the vote is not in the message the author signed"
    except InvalidCommand as e:
        return str(e)
    return None


def _votes_in(data: bytes) -> list:
    """The votes of a signed gossip batch as sent, in whatever JSON spelling the author chose."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return []
    votes = doc.get("votes") if isinstance(doc, dict) else None
    return votes if isinstance(votes, list) else []


def _same(sent: object, vote_json: dict) -> bool:
    """The author sent this vote, spelled otherwise (upper-case hex, other key order, spaces): the same vote.

    The edge decodes a batch leniently (``SignedVote.from_json``), so a forger must not escape R7 by
    spelling its forgery in a way the evidence check did not look for (protocol.md, G1).
    """
    try:
        return SignedVote.from_json(sent).to_json() == vote_json
    except ThresholdVoteError:
        return False


def build(signing_key: nacl.signing.SigningKey, data: bytes, seqno: bytes, topic: str) -> Envelope:
    """The envelope libp2p-pubsub would sign for ``data`` (for tests and other implementations)."""
    author = peer_id_bytes(bytes(signing_key.verify_key))
    signed = b"".join(_field(n, v) for n, v in ((1, author), (2, data), (3, seqno), (4, topic.encode())))
    return Envelope(signed, signing_key.sign(SIGNING_PREFIX + signed).signature)


def _field(number: int, value: bytes) -> bytes:
    return _put_varint(number << 3 | 2) + _put_varint(len(value)) + value


def _put_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _varint(b: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(b) or shift > 63:
            raise InvalidCommand("envelope: truncated varint")
        c = b[i]
        i += 1
        value |= (c & 0x7F) << shift
        if not c & 0x80:
            return value, i
        shift += 7
