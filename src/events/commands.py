"""Commands as JSON: what a unit's first row says was decided, so any follower can decide it again (R13).

Every field travels as JSON: bytes as hex, a signed vote as ``SignedVote.to_json``, an envelope as
``Envelope.to_json``. A received vote is *not* repeated in its command: the unit's own events carry
it (``VoteAccepted.vote``, or the evidence of the violation it caused), and it is taken from there
when the command is read back. That is safe because the follower then decides the command again and
requires exactly the unit's events: a writer that put another vote in them fails that check.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from events import rules
from events.envelope import Envelope
from events.errors import InvalidCommand
from events.model import Event, ViolationDetected, VoteAccepted
from events.vocab import ViolationKind
from events.vote import SignedVote

COMMANDS: dict[str, type] = {cls.__name__: cls for cls in (
    rules.AdmitWriter, rules.RevokeWriter, rules.ReportInvalidEntry, rules.ApplyRetention, rules.Configure,
    rules.AdmitMember, rules.RemoveMember, rules.Unban, rules.ReceiveVote, rules.CheckDeadline, rules.Reevaluate,
    rules.StartSubmission, rules.RecordSigned, rules.RecordBroadcast, rules.RecordConfirmed, rules.RecordFailed,
)}
_BYTES = {"vote_key", "public_key"}
_FIELDS = {name: frozenset(f.name for f in dataclasses.fields(cls)) for name, cls in COMMANDS.items()}  # type: ignore


def to_json(command: rules.Command) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(command).__name__}
    for f in dataclasses.fields(command):  # type: ignore[arg-type]
        v = getattr(command, f.name)
        if isinstance(command, rules.ReceiveVote) and f.name == "vote":
            continue  # in the unit's events (see the module docstring)
        if isinstance(v, bytes):
            v = v.hex()
        elif isinstance(v, Envelope):
            v = v.to_json()
        out[f.name] = v
    return out


def from_json(data: object, events: list[Event]) -> rules.Command:
    """The command of a unit whose events are ``events``; anything malformed raises InvalidCommand."""
    if not isinstance(data, dict) or data.get("type") not in COMMANDS:
        raise InvalidCommand("a unit's command must name a known command type")
    cls = COMMANDS[data["type"]]
    names = _FIELDS[data["type"]]
    given = set(data) - {"type"}
    if cls is rules.ReceiveVote:
        given.add("vote")
    if not given <= names:
        raise InvalidCommand(f"{cls.__name__} has no fields {sorted(given - names)}")
    kwargs: dict[str, Any] = {}
    try:
        for name in names & given:
            v = data.get(name)
            if name == "vote":
                v = SignedVote.from_json(_received_vote(events))
            elif name == "envelope":
                v = Envelope.from_json(v) if v is not None else None
            elif name in _BYTES:
                v = bytes.fromhex(v)
            kwargs[name] = v
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InvalidCommand(f"malformed {cls.__name__}: {e}"[:200]) from None


def _received_vote(events: list[Event]) -> dict:
    for e in events:
        if isinstance(e, VoteAccepted):
            return e.vote
        if isinstance(e, ViolationDetected) and e.kind == ViolationKind.DOUBLE_VOTING:
            return e.evidence["second"]
        if isinstance(e, ViolationDetected) and e.kind == ViolationKind.INVALID_SIGNATURE:
            return e.evidence["vote"]
    raise InvalidCommand("a ReceiveVote unit carries no vote")
