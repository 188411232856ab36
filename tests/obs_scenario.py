"""A scenario shared by the observability tests: real rules, every kind of event the metrics map."""

from __future__ import annotations

from dataclasses import dataclass

from helpers import Trustee, run, trustees

from events import model as m
from events.rules import (
    AdmitMember,
    CheckDeadline,
    Configure,
    Ledger,
    RecordBroadcast,
    RecordConfirmed,
    RecordSigned,
    StartSubmission,
)

TX_HASH = "0x" + "ab" * 32


@dataclass(frozen=True)
class Rec:
    """Stands in for ``events.store.Recorded``: what the projector hands the observer."""

    position: int
    recorded_at_us: int
    ev: m.Event

    def event(self) -> m.Event:
        return self.ev


def scenario() -> tuple[list[m.Event], list[Trustee]]:
    """N=4, t=3: one confirmed tx (its deadline finds one silent member), one double vote (ban +
    abort), one expired tx, then a forged vote that bans a second member and leaves 2 eligible < t."""
    ledger, ts = Ledger(), trustees(4)
    out: list[m.Event] = []
    for tr in ts:
        out += run(ledger, AdmitMember(tr.node_id, tr.vote_key, tr.peer_id, "op"))
    out += run(ledger, Configure(3, "op"))
    n1, n2, n3, _n4 = ts
    for tr in (n1, n2, n3):
        out += run(ledger, tr.receive("tx1", 7))
    out += run(ledger, StartSubmission("tx1", "sub-1", 5))
    out += run(ledger, RecordSigned("tx1", 5, 31337, "0x" + "11" * 20, 0, TX_HASH, "0x" + "22" * 40))
    out += run(ledger, RecordBroadcast("tx1", 5, TX_HASH))
    out += run(ledger, RecordConfirmed("tx1", 5, TX_HASH, 12))
    out += run(ledger, n1.receive("tx2", 5))
    out += run(ledger, n1.receive("tx2", 6))  # R4: double vote
    out += run(ledger, n2.receive("tx3", 1))
    out += run(ledger, CheckDeadline("tx1", 10**9))  # R9: tx1 reached consensus, n4 did not vote: silent
    out += run(ledger, CheckDeadline("tx3", 10**9))  # tx3 never reached t: it expires, nobody blamed
    out += run(ledger, n2.forge(n3.node_id, "tx4", 1, now=2000))  # n2's peer authors a vote forged in n3's name
    return out, ts


def recorded(events: list[m.Event], start_us: int = 1_000_000_000) -> list[Rec]:
    """Log rows one second apart, so SubmissionStarted -> SubmissionConfirmed spans 3 s."""
    return [Rec(i + 1, start_us + i * 1_000_000, e) for i, e in enumerate(events)]
