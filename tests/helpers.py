"""Test helpers shared by unit and integration tests: deterministic trustees and their votes."""

from __future__ import annotations

from dataclasses import dataclass

import nacl.signing

from events.envelope import build, vote_bytes
from events.identity import peer_id_of
from events.rules import AdmitMember, Configure, Ledger, ReceiveVote
from events.vote import SignedVote, Vote, sign


@dataclass(frozen=True)
class Trustee:
    node_id: str
    key: nacl.signing.SigningKey
    peer_id: str

    @property
    def vote_key(self) -> bytes:
        return bytes(self.key.verify_key)

    def vote(self, tx_id: str, value: int, ts: int = 1) -> SignedVote:
        return sign(Vote(tx_id, value, self.node_id, ts), self.key)

    def receive(self, tx_id: str, value: int, now: int = 1000, ts: int = 1) -> ReceiveVote:
        return ReceiveVote(self.vote(tx_id, value, ts), self.peer_id, now)

    def forge(self, claimed: str, tx_id: str, value: int, now: int = 1000, ts: int = 1,
              envelope: bool = True) -> ReceiveVote:
        """A vote in ``claimed``'s name signed with our key, gossiped by us (R7): with our signed envelope."""
        v = Vote(tx_id, value, claimed, ts)
        sv = SignedVote(v, sign(v, self.key).signature)
        env = build(self.key, b'{"v":1,"votes":[' + vote_bytes(sv.to_json()) + b"]}", b"\0" * 8, "tvote/votes/1")
        return ReceiveVote(sv, self.peer_id, now, env if envelope else None)


def trustees(n: int) -> list[Trustee]:
    """n trustees with fixed keys; each peer id derives from its key, as a real trustee's does (R1)."""
    keys = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(1, n + 1)]
    return [Trustee(f"node-{i}", k, peer_id_of(bytes(k.verify_key))) for i, k in enumerate(keys, 1)]


def bootstrap(n: int, t: int, **config: int) -> tuple[Ledger, list[Trustee]]:
    """A ledger with n admitted members and threshold t (commands decided and applied)."""
    ledger = Ledger()
    ts = trustees(n)
    for tr in ts:
        for e in ledger.decide(AdmitMember(tr.node_id, tr.vote_key, tr.peer_id, "op")):
            ledger.apply(e)
    for e in ledger.decide(Configure(t, "op", **config)):
        ledger.apply(e)
    return ledger, ts


def run(ledger: Ledger, command) -> list:
    events = ledger.decide(command)
    for e in events:
        ledger.apply(e)
    return events


def types(events) -> list[str]:
    return [e.TYPE for e in events]
