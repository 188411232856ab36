"""The trustee's signer (R14): the only code that should turn a ballot into a signature.

Order of every call: validate -> read the journal -> decide (pure) -> claim still ours? ->
sign in memory -> journal the new votes in one transaction, commit (fsync) -> return. A
signature exists outside the journal only in this process's memory until the commit
returned, so a crash at any point leaves either no trace of a vote (it was never returned)
or a journaled vote that a retry gets back byte for byte (same timestamp, same signature).

All-or-nothing per call, like the node's API: if any ballot names a tx_id the journal holds
with another value, no new vote is signed; conflicting ballots come back ``Refused`` with the
earlier vote (double-vote evidence against ourselves, never produced), new ones ``Withheld``,
ballots already signed with the same value ``Signed(fresh=False)``.

A journal failure (read or commit error, a row that stopped verifying) stops this signer for
good: it signs nothing more until a restart re-opens and re-verifies the journal (after a
failed fsync the file's state is unknown, the lesson of PostgreSQL's "fsyncgate").
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nacl.signing

from events.errors import InvalidCommand, ThresholdVoteError
from events.vote import SignedVote, Vote, check_node_id, sign

from . import interchange
from .core import Outcome, Refused, Signed, check_ballots, make_plan, outcomes
from .errors import ClaimLost, InterchangeConflict, JournalError, JournalUnavailable, SignerClosed
from .journal import Journal, no_step
from .lock import LocalLock

if TYPE_CHECKING:  # the claim pulls in pyetcd and grpc; the CLI and a claim-less signer do without them
    from .claim import InstanceClaim

Step = Callable[[str], None]

COUNTERS = (
    "calls",  # sign_many calls
    "signed",  # new signatures made (and journaled)
    "idempotent_returns",  # ballots answered with the earlier signature of the same (tx_id, value)
    "refused_conflict",  # ballots refused: another value was signed for the tx_id before
    "withheld",  # new ballots not signed because their request held a conflict
    "refused_invalid",  # calls refused for bad input (nothing read or written)
    "refused_claim_lost",  # calls refused because the etcd instance claim lapsed
    "journal_failures",  # read/commit failures; the signer stops after one
    "commits",  # journal transactions (one fsync each)
    "imported",  # votes added by imports
    "import_refused",  # imports refused (bad file or a contradiction)
)


def lock_path(journal_path: str | os.PathLike[str]) -> Path:
    p = Path(journal_path)
    return p.with_name(p.name + ".lock")


@dataclass(frozen=True, slots=True)
class ImportResult:
    imported: int  # votes added to the journal
    already_present: int  # entries whose tx_id the journal already held with the same value (no-op)



class Signer:
    def __init__(self, journal: Journal, lock: LocalLock, signing_key: nacl.signing.SigningKey,
                 claim: InstanceClaim | None, on_step: Step) -> None:
        self._journal = journal
        self._lock = lock
        self._key = signing_key
        self._claim = claim
        self._step = on_step
        self._mutex = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._stopped: str | None = None

    @classmethod
    def open(cls, journal_path: str | os.PathLike[str], signing_key: nacl.signing.SigningKey, node_id: str, *,
             create: bool = False, claim: InstanceClaim | None = None, on_step: Step | None = None) -> Signer:
        """Lock ``<journal>.lock``, then open and verify the journal (creating it only if ``create``).

        ``claim``: the etcd instance claim, taken by the caller before this (it stays the caller's
        to close); every new signature first checks it still holds. ``on_step``: a test seam
        called with the name of each step ("locked", "created-temp", "linked", "read", "signed",
        "inserted", "committed", ...) so tests can kill the process between any two.
        """
        check_node_id(node_id)
        if claim is not None and claim.node_id != node_id:
            raise InvalidCommand(f"the instance claim is for node {claim.node_id!r}, not {node_id!r}")
        step = on_step or no_step
        lock = LocalLock.acquire(lock_path(journal_path))
        try:
            step("locked")
            journal = Journal.open(journal_path, bytes(signing_key.verify_key), node_id, create=create, on_step=step)
        except BaseException:
            lock.release()
            raise
        return cls(journal, lock, signing_key, claim, step)

    @classmethod
    def create_from_interchange(
        cls, journal_path: str | os.PathLike[str], signing_key: nacl.signing.SigningKey, node_id: str, raw: bytes, *,
        on_step: Step | None = None,
    ) -> tuple[Signer, ImportResult]:
        """Import into a journal, creating it with the file's votes in one atomic step if it does not exist.

        The file is checked in full before anything is locked or written: a bad file creates nothing.
        """
        check_node_id(node_id)
        votes = interchange.decode(raw, bytes(signing_key.verify_key), node_id)
        step = on_step or no_step
        lock = LocalLock.acquire(lock_path(journal_path))
        try:
            step("locked")
            path = Path(journal_path)
            existed = path.exists() or path.is_symlink()
            journal = Journal.open(path, bytes(signing_key.verify_key), node_id, create=True, initial=votes,
                                   on_step=step)
        except BaseException:
            lock.release()
            raise
        signer = cls(journal, lock, signing_key, None, step)
        if existed:
            try:
                return signer, signer._import(votes)
            except BaseException:
                signer.close()
                raise
        signer._counts["imported"] += len(votes)
        return signer, ImportResult(len(votes), 0)

    # signing ------------------------------------------------------------------------------------

    def sign_many(self, ballots: Sequence[tuple[str, int]], now_ms: int) -> list[Outcome]:
        """One outcome per ballot, in order; new votes are journaled (one fsync) before any is returned.

        Raises InvalidVote/InvalidCommand/ContradictoryRequest for bad input (nothing read or
        written), ClaimLost when the instance claim lapsed, JournalError when the journal failed
        (and the signer stops), SignerClosed after close or such a failure.
        """
        with self._mutex:
            self._usable()
            self._counts["calls"] += 1
            try:
                clean = check_ballots(ballots, now_ms)
            except InvalidCommand:
                self._counts["refused_invalid"] += 1
                raise
            try:
                plan = make_plan(clean, self._journal.get_many(tx for tx, _ in clean))
                self._step("read")
                fresh: dict[str, SignedVote] = {}
                if plan.to_sign:
                    if self._claim is not None:
                        try:
                            self._claim.check()
                        except ClaimLost:
                            self._counts["refused_claim_lost"] += 1
                            raise
                    node = self._journal.node_id
                    fresh = {tx: sign(Vote(tx, v, node, now_ms), self._key) for tx, v in plan.to_sign}
                    self._step("signed")
                    self._journal.insert_many(list(fresh.values()), self._step)
                    self._counts["commits"] += 1
                    self._step("committed")
            except JournalError as e:
                self._fail(e)
                raise
            out = outcomes(plan, fresh)
            self._counts["signed"] += len(fresh)
            for o in out:
                if isinstance(o, Signed):
                    if not o.fresh:
                        self._counts["idempotent_returns"] += 1
                elif isinstance(o, Refused):
                    self._counts["refused_conflict"] += 1
                else:
                    self._counts["withheld"] += 1
            return out

    # interchange --------------------------------------------------------------------------------

    def export(self) -> bytes:
        """The whole journal in the interchange format (deterministic: sorted by tx_id)."""
        with self._mutex:
            self._usable()
            try:
                return interchange.encode(self.node_id, self.vote_key, self._journal.all_votes())
            except JournalError as e:  # a row that stopped verifying: the same rule as for signing
                self._fail(e)
                raise

    def import_interchange(self, raw: bytes) -> ImportResult:
        """Add a file's votes atomically; refuse the whole file if any entry is bad or contradicts the journal."""
        with self._mutex:
            self._usable()
            try:
                votes = interchange.decode(raw, self.vote_key, self.node_id)
            except ThresholdVoteError:
                self._counts["import_refused"] += 1
                raise
            return self._import(votes)

    def _import(self, votes: list[SignedVote]) -> ImportResult:
        try:
            added, present = self._journal.import_votes(votes, self._step)
        except InterchangeConflict:
            self._counts["import_refused"] += 1
            raise
        except JournalError as e:
            self._fail(e)
            raise
        self._counts["imported"] += added
        self._step("import-committed")
        return ImportResult(added, present)

    # state --------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Counters for a metric exporter: every name in COUNTERS, zero included."""
        with self._mutex:
            return {k: self._counts[k] for k in COUNTERS}

    @property
    def vote_key(self) -> bytes:
        return self._journal.vote_key

    @property
    def node_id(self) -> str:
        return self._journal.node_id

    @property
    def path(self) -> Path:
        return self._journal.path

    def votes_since(self, since_ms: int) -> list[SignedVote]:
        """Votes this journal holds signed at or after ``since_ms``: what a restarted node may still owe the log."""
        with self._mutex:
            self._usable()
            try:
                return self._journal.votes_since(since_ms)
            except JournalError as e:
                self._fail(e)
                raise

    def journal_size(self) -> int:
        with self._mutex:
            self._usable()
            return self._journal.count()

    @property
    def stopped(self) -> str | None:
        """Why the signer stopped for good (a journal failure, or closed); None while it may sign."""
        return self._stopped

    @property
    def claim(self) -> InstanceClaim | None:
        return self._claim

    def replace_claim(self, claim: InstanceClaim) -> None:
        """Sign under a new instance claim (the old one lapsed, e.g. etcd was unreachable for its TTL).

        Only a claim taken afresh with the create-only key can replace it: if another process took
        the key in the gap, ``InstanceClaim.acquire`` refused and this is never called.
        """
        if claim.node_id != self.node_id:
            raise InvalidCommand(f"the instance claim is for node {claim.node_id!r}, not {self.node_id!r}")
        with self._mutex:
            self._claim = claim

    def _fail(self, e: JournalError) -> None:
        self._counts["journal_failures"] += 1
        self._stopped = f"{type(e).__name__}: {e}"

    def _usable(self) -> None:
        if self._stopped is not None:
            if self._stopped == "closed":
                raise SignerClosed("the signer is closed")
            raise JournalUnavailable(f"the signer stopped after a journal failure ({self._stopped}); restart it")

    def close(self) -> None:
        """Close the journal, then drop the lock (in that order: no one opens it while we still write)."""
        with self._mutex:
            if self._stopped != "closed":
                self._stopped = "closed"
                self._journal.close()
                self._lock.release()

    def __enter__(self) -> Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
