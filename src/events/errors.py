"""Typed errors, so callers handle a rejected command differently from a conflict or an outage.

Every error here means: nothing was appended, no counter changed.
"""

from __future__ import annotations


def show(value: object, limit: int = 80) -> str:
    """repr() for error messages that cannot itself fail (an int over 4300 digits makes repr raise)."""
    try:
        return repr(value)[:limit]
    except ValueError:
        return f"<{type(value).__name__} too large to print>"


class ThresholdVoteError(Exception):
    """Base of every error this service raises on purpose."""


class CommandRejected(ThresholdVoteError):
    """The command is not allowed in the current state (a decision, not a fault)."""


class InvalidCommand(CommandRejected):
    """Malformed or out-of-range input: wrong types, bounds, oversized fields."""


class InvalidVote(InvalidCommand):
    """A vote that violates R2's bounds (tx_id, value, node_id, signature shape)."""


class OutsiderVote(CommandRejected):
    """R1: signed by, or relayed by, someone outside the trustee set; dropped, counted, never logged."""


class BannedSender(CommandRejected):
    """R10: a banned member's vote or relay; dropped at the edge, counted, never logged."""


class UnprovenForgery(CommandRejected):
    """R7: a vote that does not verify, but no signed envelope proves who authored it: nobody is blamed."""


class NotEntitled(CommandRejected):
    """R13: this writer may not write this command (not a member, operator or submitter of the right role)."""


class UnknownTransaction(CommandRejected):
    """The command names a transaction the log has never seen."""


class NotSubmittable(CommandRejected):
    """The transaction cannot be claimed for submission (aborted, expired, not yet decided, ...)."""


class StaleLock(CommandRejected):
    """A submitter acted under a lock revision older than the current claim (fencing)."""


class NotConfigured(CommandRejected):
    """The cluster has no ClusterConfigured event yet: no threshold to decide against."""


class UnknownEvent(InvalidCommand):
    """A fold of the log met an event type it has no case for: every fold handles every type (events.model)."""

    def __init__(self, event: object) -> None:
        super().__init__(f"no case for event type {getattr(event, 'TYPE', type(event).__name__)}")


class ConcurrencyConflict(ThresholdVoteError):
    """Another writer appended to a stream this decision read: reload and decide again."""


class StoreUnavailable(ThresholdVoteError):
    """Postgres or etcd could not be reached; the append did not happen and may be retried."""
