"""The signer's decisions as pure functions: which ballots to sign, which to refuse, what a row means.

No I/O here: the shell (``signer.py``, ``journal.py``) reads the journal, asks these functions
what to do, and writes. Keeping the rule in one pure place is what lets the tests state it
exactly: a tx_id gets one value forever, and a request that would break that signs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from events.errors import InvalidCommand, show
from events.vote import U64_MAX, SignedVote, Vote, check_tx_id, check_u64

from .errors import ContradictoryRequest, JournalCorrupt

MAX_BALLOTS = 10_000  # per call: bounds one transaction's size and the time the signer's mutex is held
_U64_TEXT = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True, slots=True)
class Signed:
    """The ballot's signed vote. ``fresh``: signed by this call; else the earlier signature, returned unchanged."""

    vote: SignedVote
    fresh: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """Another value was signed for this tx_id before: ``earlier`` is that vote. Nothing was signed."""

    tx_id: str
    value: int
    earlier: SignedVote


@dataclass(frozen=True, slots=True)
class Withheld:
    """Not signed because another ballot of the same request was refused (all-or-nothing)."""

    tx_id: str
    value: int


Outcome = Signed | Refused | Withheld


def request_refused(outcomes: Sequence[Outcome]) -> bool:
    """True when the request as a whole was refused (some ballot conflicts; no new signature was made)."""
    return any(isinstance(o, Refused) for o in outcomes)


def check_ballots(ballots: object, now_ms: object) -> list[tuple[str, int]]:
    """Validate a request with the project's checks; raise before anything is read, signed or written.

    One tx_id twice with the same value is allowed (a client batching its own retry); with two
    values it is a contradiction within the request and the whole request is refused.
    """
    check_u64("now_ms", now_ms)
    if not isinstance(ballots, list | tuple):
        raise InvalidCommand(f"ballots must be a list of (tx_id, value) pairs, got {show(ballots)}")
    if len(ballots) > MAX_BALLOTS:
        raise InvalidCommand(f"at most {MAX_BALLOTS} ballots per call, got {len(ballots)}")
    clean: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    for b in ballots:
        if not isinstance(b, list | tuple) or len(b) != 2:
            raise InvalidCommand(f"a ballot is a (tx_id, value) pair, got {show(b)}")
        tx_id, value = check_tx_id(b[0]), check_u64("value", b[1])
        if seen.setdefault(tx_id, value) != value:
            raise ContradictoryRequest(f"request names {tx_id} with two values ({seen[tx_id]} and {value})")
        clean.append((tx_id, value))
    return clean


@dataclass(frozen=True, slots=True)
class Plan:
    """What one call does, decided from the request and the journal's earlier votes for its tx_ids."""

    ballots: list[tuple[str, int]]
    earlier: Mapping[str, SignedVote]
    refused: bool  # some ballot conflicts with an earlier vote: sign nothing new
    to_sign: list[tuple[str, int]]  # the new (tx_id, value) pairs, once each, in request order


def make_plan(ballots: list[tuple[str, int]], earlier: Mapping[str, SignedVote]) -> Plan:
    refused = any(tx in earlier and earlier[tx].vote.value != v for tx, v in ballots)
    to_sign: list[tuple[str, int]] = []
    if not refused:
        seen: set[str] = set()
        for tx, v in ballots:
            if tx not in earlier and tx not in seen:
                seen.add(tx)
                to_sign.append((tx, v))
    return Plan(ballots, earlier, refused, to_sign)


def outcomes(plan: Plan, fresh: Mapping[str, SignedVote]) -> list[Outcome]:
    """One outcome per ballot, in request order; ``fresh`` holds the votes signed (and journaled) for this call."""
    out: list[Outcome] = []
    for tx, v in plan.ballots:
        e = plan.earlier.get(tx)
        if e is not None:
            out.append(Signed(e, False) if e.vote.value == v else Refused(tx, v, e))
        elif plan.refused:
            out.append(Withheld(tx, v))
        else:
            out.append(Signed(fresh[tx], True))
    return out


# journal rows ------------------------------------------------------------------------------------

def u64_text(n: int) -> str:
    """u64 as decimal text: SQLite integers and JSON numbers in most readers stop short of 2^64-1."""
    return str(check_u64("value", n))


def parse_u64_text(name: str, text: object) -> int:
    if not isinstance(text, str) or not _U64_TEXT.fullmatch(text) or int(text) > U64_MAX:
        raise ValueError(f"{name} must be a decimal string of a u64 without leading zeros, got {show(text)}")
    return int(text)


def row_vote(row: Sequence[object], node_id: str) -> SignedVote:
    """A journal row ``(tx_id, value, timestamp_ms, signature)`` as a signed vote, or JournalCorrupt."""
    tx_id, value, ts, sig = row
    try:
        return SignedVote(Vote(tx_id, parse_u64_text("value", value), node_id, parse_u64_text("timestamp_ms", ts)),
                          sig)
    except (ValueError, TypeError, InvalidCommand) as e:
        raise JournalCorrupt(f"journal row for {show(tx_id)} is malformed: {e}") from None


def verify_row(sv: SignedVote, verify_key: nacl.signing.VerifyKey) -> None:
    """A stored signature must be ours over exactly this vote; if not, the journal was altered."""
    try:
        verify_key.verify(sv.vote.signing_bytes(), sv.signature)
    except nacl.exceptions.BadSignatureError:
        raise JournalCorrupt(
            f"journal row for {sv.vote.tx_id} (value {sv.vote.value}) does not verify under the journal's key: "
            "the journal was altered or belongs to another node; refusing to sign over it"
        ) from None


def check_order(previous: str | None, tx_id: str) -> None:
    """Rows are read in tx_id order: each must be strictly after the last, or one tx_id has two rows."""
    if previous is not None and not previous < tx_id:
        what = "two rows" if previous == tx_id else "rows out of order"
        raise JournalCorrupt(f"journal holds {what} for {previous!r}/{tx_id!r}: its rows contradict each other")
