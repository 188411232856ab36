"""Typed refusals of the signer (R14), so the node can tell "refused, by design" from "broken, stop".

Every error here means: no signature left the signer because of the call that raised it.
"""

from __future__ import annotations

from events.errors import CommandRejected, InvalidCommand, ThresholdVoteError


class SignerError(ThresholdVoteError):
    """Base of the signer's own errors (bad ballots raise the project's ``InvalidVote``)."""


class JournalError(SignerError):
    """The journal cannot be trusted or used: the signer refuses to start (or to go on)."""


class JournalMissing(JournalError):
    """No journal at the path and the caller did not ask to create one.

    A missing journal is never silently recreated: a trustee that has signed before and starts
    on an empty journal has forgotten its signatures and could sign another value for them.
    """


class JournalCorrupt(JournalError):
    """Garbage, truncated, inconsistent or tampered journal (a row whose signature does not verify)."""


class JournalPermissions(JournalError):
    """The journal or its lock file is not a regular file of ours with mode 0600 (or cannot be opened)."""


class WrongJournal(JournalError):
    """The journal belongs to another vote key or node id (copied from another trustee?)."""


class JournalUnavailable(JournalError):
    """A write to the journal failed (disk full, I/O error): this signer signs nothing more until restarted.

    After a failed commit the file's state is not known to us (an fsync error may have dropped
    pages, or the write may still land). Re-opening re-reads and re-verifies the journal.
    """


class SignerClosed(SignerError):
    """The signer was closed (or broken by an earlier failure); open a new one."""


class SignerLocked(SignerError):
    """Another process holds the local lock on this journal: only one process signs with a key."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


class InstanceClaimed(SignerError):
    """Another process (maybe on another machine) holds the etcd instance claim for this node id."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


class ClaimLost(SignerError):
    """Our etcd instance claim lapsed (lease expired or revoked): sign nothing until it is re-taken."""


class ContradictoryRequest(InvalidCommand):
    """One request names a transaction twice with different values: nothing is signed."""


class InterchangeInvalid(InvalidCommand):
    """An interchange file that is malformed, for another key or node, or holds a bad or double entry."""


class InterchangeConflict(CommandRejected):
    """An interchange entry contradicts the journal (same transaction, another value): nothing imported."""
