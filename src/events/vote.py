"""Signed votes (R2): the canonical, length-prefixed bytes a trustee signs.

The seed signs ``tx_id || value``, which is ambiguous ("tx_1"+"23" == "tx_12"+"3").
Here every field is length-prefixed after a domain tag, so two different votes can
never share signed bytes, and a signature made for another protocol can never pass.
"""

from __future__ import annotations

import re
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import blake3
import nacl.exceptions
import nacl.signing

from events.errors import InvalidVote, show

DOMAIN_TAG = b"threshold-vote/v1/vote"
TX_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
NODE_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
U64_MAX = 2**64 - 1
SIGNATURE_LEN = 64
KEY_LEN = 32
# Entries, each a 32-byte digest (~110 bytes with the dict's slot): ~3.5 MB once full. 32,768 votes is
# 30 s of a 10-member cluster at 100 tx/s, far longer than the copies of one vote take to arrive.
VERIFY_CACHE_SIZE = 32_768


def churned_table(capacity: int) -> dict:
    """An empty dict whose hash table already has the size a FIFO memo of ``capacity`` entries settles at.

    A dict only resizes when its free slots run out, to three times the live entries: one filled by inserts
    alone stops at about 1.3 x ``capacity`` slots, and the first resize under churn (after ~4/3 x ``capacity``
    inserts) doubles it once, for good. For the vote memo that was a +1.3 MB step in RSS after ~11,000
    transactions (measured with tracemalloc in ``bench/soak_bench.py``), after the 10,000-transaction
    reference point of the soak. Churning dummy keys through the table until that resize happens, then
    deleting them, keeps the grown table (deleting never shrinks a dict): the memo's memory is reached at start.
    """
    table: dict = dict.fromkeys(range(capacity))
    size, k = sys.getsizeof(table), capacity
    while sys.getsizeof(table) == size and k < 4 * capacity:
        del table[k - capacity]
        table[k] = None
        k += 1
    for key in range(k - capacity, k):
        del table[key]
    return table


_VERIFIED: dict[bytes, bool] = churned_table(VERIFY_CACHE_SIZE)
_VERIFIED_LOCK = threading.Lock()  # the edge (Trio thread), the worker and verify_all's pool all write it
_POOL: ThreadPoolExecutor | None = None
PARALLEL_MIN = 32  # below this a batch is verified inline: a thread hop costs more than it saves


def check_tx_id(tx_id: object) -> str:
    if not isinstance(tx_id, str) or not TX_ID_RE.fullmatch(tx_id):
        raise InvalidVote(f"tx_id must be 1..128 characters of [A-Za-z0-9_.:-], got {show(tx_id)}")
    return tx_id


def check_node_id(node_id: object) -> str:
    if not isinstance(node_id, str) or not NODE_ID_RE.fullmatch(node_id):
        raise InvalidVote(f"node_id must be 1..64 characters of [A-Za-z0-9_.:-], got {show(node_id)}")
    return node_id


def check_u64(name: str, value: object) -> int:
    # bool is an int subclass: True must not pass as the value 1.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise InvalidVote(f"{name} must be an integer in 0..2^64-1, got {show(value)}")
    return value


@dataclass(frozen=True, slots=True)
class Vote:
    """What a trustee asserts: "for tx_id, the value is value", at a time of its own."""

    tx_id: str
    value: int
    node_id: str
    timestamp_ms: int
    # The signed bytes, built once: a vote is checked at the edge, by the decider and in the memo.
    _signed: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_tx_id(self.tx_id)
        check_u64("value", self.value)
        check_node_id(self.node_id)
        check_u64("timestamp_ms", self.timestamp_ms)
        object.__setattr__(self, "_signed", b"".join((
            _TAG_FIELD,
            _field(self.tx_id.encode()),
            struct.pack(">Q", self.value),
            _field(self.node_id.encode()),
            struct.pack(">Q", self.timestamp_ms),
        )))

    def signing_bytes(self) -> bytes:
        return self._signed


@dataclass(frozen=True, slots=True)
class SignedVote:
    vote: Vote
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_LEN:
            raise InvalidVote("signature must be 64 bytes")

    def verifies_under(self, vote_key: bytes) -> bool:
        """True when the signature is the vote key's over the canonical bytes.

        Memoised: verification is a pure function of (key, bytes, signature), and the same
        vote is checked at the network edge, by the decider and by every node that receives
        it. A hit requires all three to match, so the cache cannot make a bad vote pass.
        """
        msg = self.vote.signing_bytes()
        key = _memo_key(vote_key, msg, self.signature)
        hit = _VERIFIED.get(key)
        if hit is not None:
            return hit
        try:
            nacl.signing.VerifyKey(vote_key).verify(msg, self.signature)
            ok = True
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
            ok = False
        with _VERIFIED_LOCK:
            if len(_VERIFIED) >= VERIFY_CACHE_SIZE:
                _VERIFIED.pop(next(iter(_VERIFIED)))  # oldest first: dicts keep insertion order
            _VERIFIED[key] = ok
        return ok

    def to_json(self) -> dict[str, object]:
        v = self.vote
        return {
            "tx_id": v.tx_id,
            "value": v.value,
            "node_id": v.node_id,
            "timestamp_ms": v.timestamp_ms,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: object) -> SignedVote:
        if not isinstance(data, dict):
            raise InvalidVote("a signed vote must be a JSON object")
        try:
            sig = bytes.fromhex(data["signature"])
            vote = Vote(data["tx_id"], data["value"], data["node_id"], data["timestamp_ms"])
        except KeyError as e:
            raise InvalidVote(f"signed vote lacks field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise InvalidVote(f"malformed signed vote: {e}") from None
        return cls(vote, sig)


def verify_all(pairs: list[tuple[SignedVote, bytes]], workers: int = 2) -> None:
    """Check many (vote, key) pairs on a small thread pool, filling the memo ``verifies_under`` reads.

    libsodium releases the GIL, so a batch is checked on several cores at once (measured here:
    15,000/s on one thread, 25,000/s on two). Only a warm-up: the answers are read back through
    ``verifies_under``, which decides.
    """
    global _POOL
    pairs = [(sv, key) for sv, key in pairs if _memo_key(key, sv.vote.signing_bytes(), sv.signature) not in _VERIFIED]
    if len(pairs) < PARALLEL_MIN:
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(workers, thread_name_prefix="verify")
    step = -(-len(pairs) // workers)
    chunks = [pairs[i:i + step] for i in range(0, len(pairs), step)]
    list(_POOL.map(lambda chunk: [sv.verifies_under(key) for sv, key in chunk], chunks))


def _memo_key(vote_key: bytes, msg: bytes, signature: bytes) -> bytes:
    """The memo's key: a 256-bit digest of the three inputs, not the inputs themselves.

    Holding the key, message and signature cost ~300 bytes per entry (20 MB for a full memo, the
    largest thing a long-running node grew by). The key is length-prefixed and the signature is
    always 64 bytes (``SignedVote`` checks it), so two different triples never hash the same bytes;
    making a bad vote hit a good one's entry needs a BLAKE3 collision (2^128 work).
    """
    return blake3.blake3(b"".join((struct.pack(">I", len(vote_key)), vote_key, msg, signature))).digest()


def sign(vote: Vote, signing_key: nacl.signing.SigningKey) -> SignedVote:
    return SignedVote(vote, signing_key.sign(vote.signing_bytes()).signature)


def _field(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


_TAG_FIELD = _field(DOMAIN_TAG)


def certificate_bytes(votes: list[SignedVote]) -> bytes:
    """The consensus certificate: the deciding signed votes, canonically encoded, sorted by node.

    Its hash goes on chain beside the value, so anyone holding the log can check
    the on-chain record against the very signatures that decided it.
    """
    parts = [_field(DOMAIN_TAG + b"/certificate")]
    for sv in sorted(votes, key=lambda s: s.vote.node_id):
        parts.append(_field(sv.vote.signing_bytes()))
        parts.append(_field(sv.signature))
    return b"".join(parts)


def certificate_hash(votes: list[SignedVote]) -> str:
    return blake3.blake3(certificate_bytes(votes)).hexdigest()
