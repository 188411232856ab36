"""The protocol's names, defined once: statuses, violation kinds, ban and abort reasons.

Every fold of the log (the decider, the projector, the metrics, the submitter's index, the
audit), the CLI, the migrations' CHECK constraints and the TLA+ mapping import these; none
restates a string. They are ``StrEnum`` so they travel as plain strings in event payloads
(the hash chain is computed over JSON, where a member is its value) and compare equal to the
strings read back from the log.

``tests/unit/test_vocabulary.py`` fails when a name here is missing from any of those places.
"""

from __future__ import annotations

from enum import StrEnum


class TxStatus(StrEnum):
    """A transaction's state (the FSM of seed section 6, corrected by R6, R8, R9)."""

    COLLECTING = "COLLECTING"
    THRESHOLD_REACHED = "THRESHOLD_REACHED"
    SUBMITTING = "SUBMITTING"
    CONFIRMED = "CONFIRMED"
    ABORTED_BYZANTINE = "ABORTED_BYZANTINE"
    ABORTED_NO_QUORUM = "ABORTED_NO_QUORUM"
    EXPIRED = "EXPIRED"


ABORTABLE = frozenset({TxStatus.COLLECTING, TxStatus.THRESHOLD_REACHED})  # R8
FINAL = frozenset({TxStatus.CONFIRMED, TxStatus.ABORTED_BYZANTINE, TxStatus.ABORTED_NO_QUORUM, TxStatus.EXPIRED})


class AbortReason(StrEnum):
    """Why ``TransactionAborted`` ended a transaction; each maps to one final status."""

    BYZANTINE = "BYZANTINE"  # R4, R5: a Byzantine vote
    NO_QUORUM = "NO_QUORUM"  # R6: no value can reach t any more, nobody blamed

    @property
    def status(self) -> TxStatus:
        return _ABORT_STATUS[self]


_ABORT_STATUS = {AbortReason.BYZANTINE: TxStatus.ABORTED_BYZANTINE, AbortReason.NO_QUORUM: TxStatus.ABORTED_NO_QUORUM}


class ViolationKind(StrEnum):
    """What ``ViolationDetected`` records; the first three are Byzantine and ban (R4, R5, R7)."""

    DOUBLE_VOTING = "DOUBLE_VOTING"
    MINORITY_VOTE = "MINORITY_VOTE"
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    SILENT_FAILURE = "SILENT_FAILURE"


BYZANTINE_KINDS = frozenset({ViolationKind.DOUBLE_VOTING, ViolationKind.MINORITY_VOTE, ViolationKind.INVALID_SIGNATURE})


class BanReason(StrEnum):
    """Why ``NodeBanned`` banned a member: a Byzantine violation, or sustained silence (R9, opt-in)."""

    DOUBLE_VOTING = ViolationKind.DOUBLE_VOTING.value
    MINORITY_VOTE = ViolationKind.MINORITY_VOTE.value
    INVALID_SIGNATURE = ViolationKind.INVALID_SIGNATURE.value
    REPUTATION_FLOOR = "REPUTATION_FLOOR"
    INVALID_ENTRY = "INVALID_ENTRY"  # R13: it signed a log entry the rules do not produce


class WriterRole(StrEnum):
    """Who may write which commands to the log (R13); trustees write as members, with their vote keys."""

    OPERATOR = "operator"  # membership, configuration, unbans, retention, writers
    SUBMITTER = "submitter"  # the chain submission steps
    TRUSTEE = "trustee"  # votes, deadlines, re-evaluations, reports of invalid entries


class ReputationReason(StrEnum):
    """Why ``ReputationChanged`` moved a member's score (R9: silence lowers it, taking part raises it)."""

    SILENT_FAILURE = ViolationKind.SILENT_FAILURE.value
    PARTICIPATION = "PARTICIPATION"  # voted the consensus value of a transaction (R9: reputation recovers)
    SILENCE_WITHDRAWN = "SILENCE_WITHDRAWN"  # its vote was on time after all: penalty back, and the reward
    UNBANNED = "UNBANNED"
    DOUBLE_VOTING = ViolationKind.DOUBLE_VOTING.value  # a Byzantine ban drops it to 0 (seed 3.3)
    MINORITY_VOTE = ViolationKind.MINORITY_VOTE.value
    INVALID_SIGNATURE = ViolationKind.INVALID_SIGNATURE.value
    INVALID_ENTRY = "INVALID_ENTRY"


def sql_in(names: type[StrEnum] | frozenset[StrEnum]) -> str:
    """``('A', 'B', ...)`` for a CHECK constraint: the migrations build theirs from these names."""
    return "(" + ", ".join(f"'{n.value}'" for n in sorted(names, key=lambda n: n.value)) + ")"
