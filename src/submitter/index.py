"""What the submitter needs from the log beyond ``rules.Tx``: certificates, signed raw txs, failures.

``rules.Tx`` keeps only what the decider needs (status, value, lock revision, signed hashes). The
submitter also needs the certificate hash to sign (ThresholdReached), every signed raw transaction
with its nonce (to re-broadcast or look up on recovery, R11), the highest nonce the log has signed per
sender (the nonce floor), and which transactions ended in a non-retryable failure (an alert: never
retried automatically). :class:`FollowingRecorder` feeds every event it reads or appends to a
:class:`LogIndex`; the index is idempotent because an event can reach it twice (appended, then read
back when the recorder re-reads after a conflict).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from functools import cached_property

from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes

from chain import Fees
from events import rules
from events.errors import UnknownEvent
from events.model import (
    ClusterConfigured,
    DeadlinePassed,
    Event,
    InvalidEntryReported,
    MemberAdmitted,
    MemberRemoved,
    NodeBanned,
    NodeUnbanned,
    ReputationChanged,
    RetentionApplied,
    SilenceWithdrawn,
    SubmissionBroadcast,
    SubmissionConfirmed,
    SubmissionFailed,
    SubmissionSigned,
    SubmissionStarted,
    ThresholdReached,
    TransactionAborted,
    TransactionExpired,
    TransactionOpened,
    ViolationDetected,
    VoteAccepted,
    WriterAdmitted,
    WriterRevoked,
)
from events.store import EventStore
from events.writers import RowSigner
from recording.guard import Guard
from recording.recorder import Recorder, Result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signed:
    """One SubmissionSigned: a raw transaction the log holds, so it can always be re-broadcast."""

    tx_id: str
    tx_hash: str  # 0x hex
    nonce: int
    chain_id: int
    sender: str
    raw_tx: str  # 0x hex
    lock_revision: int

    @property
    def hash_bytes(self) -> bytes:
        return bytes.fromhex(self.tx_hash.removeprefix("0x"))

    @property
    def raw_bytes(self) -> bytes:
        return bytes.fromhex(self.raw_tx.removeprefix("0x"))

    @cached_property
    def fees(self) -> Fees:
        """The fees signed into the raw transaction (needed to price a same-nonce replacement)."""
        d = TypedTransaction.from_bytes(HexBytes(self.raw_bytes)).as_dict()
        return Fees(int(d["maxFeePerGas"]), int(d["maxPriorityFeePerGas"]))


@dataclass
class LogIndex:
    certs: dict[str, str] = field(default_factory=dict)  # tx_id -> certificate hash (BLAKE3 hex)
    signed: dict[str, dict[str, Signed]] = field(default_factory=dict)  # tx_id -> tx_hash -> Signed
    dead: dict[str, str] = field(default_factory=dict)  # tx_id -> non-retryable failure
    pending: set[str] = field(default_factory=set)  # reached consensus, not confirmed/aborted/dead
    max_nonce: dict[tuple[int, str], int] = field(default_factory=dict)  # (chain, sender) -> highest signed
    by_nonce: dict[tuple[int, str], dict[int, Signed]] = field(default_factory=dict)  # latest signed per nonce
    problems: list[str] = field(default_factory=list)

    def on_event(self, event: Event, ledger: rules.Ledger) -> None:
        match event:
            case ThresholdReached():
                if event.tx_id not in ledger.txs:
                    self.problem(f"consensus event for unknown transaction {event.tx_id!r}: ignored, nothing sent")
                    return
                self.certs[event.tx_id] = event.certificate_hash
                if event.tx_id not in self.dead and ledger.txs[event.tx_id].status in (
                    rules.THRESHOLD_REACHED, rules.SUBMITTING
                ):
                    self.pending.add(event.tx_id)
            case SubmissionSigned():
                s = Signed(event.tx_id, event.tx_hash, event.nonce, event.chain_id, event.sender, event.raw_tx,
                           event.lock_revision)
                self.signed.setdefault(event.tx_id, {})[event.tx_hash] = s
                k = (event.chain_id, event.sender.lower())
                self.max_nonce[k] = max(self.max_nonce.get(k, -1), event.nonce)
                self.by_nonce.setdefault(k, {})[event.nonce] = s  # a replacement pays more: keep the latest
            case SubmissionConfirmed():
                self.pending.discard(event.tx_id)
                self.forget(event.tx_id)
            case TransactionAborted() | TransactionExpired():
                self.pending.discard(event.tx_id)
            case SubmissionFailed():
                if not event.retryable:
                    self.dead[event.tx_id] = event.error
                    self.pending.discard(event.tx_id)
            case (ClusterConfigured() | MemberAdmitted() | MemberRemoved() | NodeBanned() | NodeUnbanned()
                  | ReputationChanged() | RetentionApplied() | TransactionOpened() | VoteAccepted()
                  | ViolationDetected() | DeadlinePassed() | SilenceWithdrawn() | SubmissionStarted()
                  | SubmissionBroadcast()
                  | WriterAdmitted() | WriterRevoked() | InvalidEntryReported()):
                pass  # the decider's business: rules.Tx already holds what the submitter needs of them
            case _:
                raise UnknownEvent(event)

    def forget(self, tx_id: str) -> None:
        """Bounded memory: a confirmed transaction needs nothing more (its nonce stays in ``max_nonce``)."""
        self.certs.pop(tx_id, None)
        for s in self.signed.pop(tx_id, {}).values():
            book = self.by_nonce.get((s.chain_id, s.sender.lower()), {})
            if (held := book.get(s.nonce)) is not None and held.tx_id == tx_id:
                del book[s.nonce]

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)
            log.error(text)

    def next_nonce_floor(self, chain_id: int, sender: str) -> int:
        return self.max_nonce.get((chain_id, sender.lower()), -1) + 1


class FollowingRecorder(Recorder):
    """The node's Recorder, with every event it reads or appends also given to a LogIndex."""

    def __init__(self, store: EventStore, guard: Guard, signer: RowSigner, index: LogIndex,
                 retain_final: int | None = 10_000) -> None:
        super().__init__(store, guard, signer, retain_final=retain_final)
        self.index = index
        self.on_event = lambda event: index.on_event(event, self.ledger)

    def extra_state(self) -> dict:
        """The index beside the follower's state in a snapshot: a restart needs its certificates and raw txs."""
        ix = self.index
        return {"certs": ix.certs, "dead": ix.dead, "pending": sorted(ix.pending),
                "signed": [dataclasses.asdict(s) for per in ix.signed.values() for s in per.values()],
                "max_nonce": [[c, s, n] for (c, s), n in ix.max_nonce.items()],
                "by_nonce": [[c, s, n, x.tx_id, x.tx_hash] for (c, s), book in ix.by_nonce.items()
                             for n, x in book.items()]}

    def restore_extra(self, extra: dict) -> None:
        ix = self.index
        ix.certs, ix.dead, ix.pending = dict(extra["certs"]), dict(extra["dead"]), set(extra["pending"])
        ix.signed = {}
        for d in extra["signed"]:
            ix.signed.setdefault(d["tx_id"], {})[d["tx_hash"]] = Signed(**d)
        ix.max_nonce = {(c, s): n for c, s, n in extra["max_nonce"]}
        ix.by_nonce = {}
        for c, s, n, tx_id, tx_hash in extra["by_nonce"]:
            ix.by_nonce.setdefault((c, s), {})[n] = ix.signed[tx_id][tx_hash]

    def execute(self, commands: list[rules.Command]) -> list[Result]:
        results = super().execute(commands)
        # The submitter retries on its own terms; it never calls retry_deferred.
        self.deferred.clear()
        return results
