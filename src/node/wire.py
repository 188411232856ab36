"""What travels in one gossip message: a batch of individually signed votes.

One vote per gossip message cannot reach the targets (py-libp2p spends ~1.6 ms per message
against ~0.06 ms to verify a vote), so a node sends its votes in batches on a short window.
Each vote keeps its own signature: a batch is only an envelope, never evidence itself.
"""

from __future__ import annotations

import json

from events.errors import InvalidVote
from events.vote import SignedVote

WIRE_VERSION = 1
MAX_BATCH = 1024
MAX_BYTES = 512 * 1024
# Under load a node sends at most one gossip message per interval (at once when idle): votes per
# message grow with the rate, and the per-message cost of the gossip stack stops growing with it.
PUBLISH_INTERVAL_MS = 50.0
# ... and the interval grows with the committee: every member receives the messages of the N - 1
# others, so with N x this per member a receiver handles at most ~1 / this messages/s under load
# (80/s), whatever N (issue 15). N=4: 50 ms as before; N=10: 125 ms.
PUBLISH_INTERVAL_PER_MEMBER_MS = 12.5
MAX_PUBLISH_INTERVAL_MS = 500.0


def publish_interval_ms(base_ms: float, per_member_ms: float, members: int) -> float:
    """The publisher's pace under load for a committee of ``members``: the larger of the two, capped."""
    return min(MAX_PUBLISH_INTERVAL_MS, max(base_ms, per_member_ms * members))


def encode(votes: list[SignedVote]) -> bytes:
    return json.dumps({"v": WIRE_VERSION, "votes": [sv.to_json() for sv in votes]},
                      separators=(",", ":"), sort_keys=True).encode()


MAX_DEPTH = 8  # a batch is 3 deep; anything much deeper is hostile
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(payload: bytes) -> bool:
    """Nesting deeper than MAX_DEPTH, found without recursing.

    json.loads recurses in C; it stops at the interpreter's recursion limit, which web3's py_ecc
    raises to 100,000 in any process that imports it; 100k nested brackets then overflow the C
    stack (a segfault, seen in CI) instead of raising. So depth is checked first, over the
    brackets alone (our votes' strings never contain any).
    """
    depth = 0
    for c in payload.translate(None, _NOT_BRACKETS):
        depth += 1 if c in (0x5B, 0x7B) else -1
        if depth > MAX_DEPTH:
            return True
    return False


def decode(payload: bytes) -> list[SignedVote]:
    """Parse a batch; anything malformed raises InvalidVote (the message is dropped at the edge)."""
    if len(payload) > MAX_BYTES:
        raise InvalidVote(f"gossip payload of {len(payload)} bytes is over {MAX_BYTES}")
    if too_deep(payload):
        raise InvalidVote(f"gossip payload nests deeper than {MAX_DEPTH}")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError also covers ints over Python's digit limit; RecursionError, deep nesting.
        raise InvalidVote(f"gossip payload is not acceptable JSON: {type(e).__name__}") from None
    if not isinstance(doc, dict) or doc.get("v") != WIRE_VERSION or not isinstance(doc.get("votes"), list):
        raise InvalidVote("gossip payload is not a vote batch of this version")
    votes = doc["votes"]
    if not 0 < len(votes) <= MAX_BATCH:
        raise InvalidVote(f"a batch holds 1..{MAX_BATCH} votes, got {len(votes)}")
    return [SignedVote.from_json(v) for v in votes]
