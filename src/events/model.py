"""Domain events: the immutable facts in the log, their streams, keys and schema versions.

Payloads hold JSON-native values only (str, int, list, dict; never float), because the
log's hash chain is computed over a canonical JSON encoding that must come back
byte-identical after a round trip through Postgres ``jsonb`` (R12, audit).
Reputation is therefore kept in integer milli-points (1000 = 1.0).

Each event type has a schema version. Stored payloads of an older version are brought
up to date on read by the upcasters in ``events.upcast``; code only ever sees the
current shape.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, ClassVar

CLUSTER_STREAM = "cluster"


def tx_stream(tx_id: str) -> str:
    return f"tx:{tx_id}"


@dataclass(frozen=True)
class Event:
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    @property
    def stream(self) -> str:
        tx_id = getattr(self, "tx_id", None)
        return tx_stream(tx_id) if tx_id is not None else CLUSTER_STREAM

    @property
    def key(self) -> str:
        """Idempotency key: a retried decision produces the same key, and the log keeps one."""
        raise NotImplementedError(self.TYPE)

    def to_payload(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Event:
        """The event from its stored payload, refusing unknown fields and values of the wrong JSON type.

        The log is written by the decider, but it is read by anyone: a row that does not have the
        shape of its type is reported (TypeError -> InvalidCommand in ``decode``), never folded.
        """
        names, shape = _shape(cls)
        if extra := payload.keys() - names:
            raise TypeError(f"unknown fields {sorted(extra)}")  # a newer shape needs a new VERSION
        kwargs = {}
        for name, annotation, want in shape:
            v = payload[name]
            if want is not None:
                _check_json_type(name, annotation, want, v)
            kwargs[name] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "dict[str, Any]": (dict,), "tuple[str, ...]": (list, tuple),
}


@functools.cache
def _shape(cls: type) -> tuple[frozenset[str], tuple[tuple[str, str, tuple[type, ...] | None], ...]]:
    """An event type's field names, and each field's JSON types (looked up once per type: every row
    read pays ``from_payload``, and ``dataclasses.fields`` with the annotation's string was ~60 % of it)."""
    fields = dataclasses.fields(cls)
    return frozenset(f.name for f in fields), tuple((f.name, str(f.type), _JSON_TYPES.get(str(f.type))) for f in fields)


def _check_json_type(name: str, annotation: str, want: tuple[type, ...], v: Any) -> None:
    if not isinstance(v, want) or (want == (int,) and isinstance(v, bool)):
        raise TypeError(f"field {name} must be {annotation}, got {type(v).__name__}")
    if want == (list, tuple) and not all(isinstance(x, str) for x in v):
        raise TypeError(f"field {name} must hold strings")


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return v


# --- membership and configuration (stream "cluster") -------------------------------------------


@dataclass(frozen=True)
class ClusterConfigured(Event):
    TYPE = "ClusterConfigured"
    VERSION = 2  # v1 had no participation_reward / floor_ban_after (R9 before its revision); see events.upcast
    threshold: int
    deadline_ms: int
    reputation_floor: int  # milli-points; below it operators are alerted (and, if opted in, a member banned)
    silent_penalty: int  # milli-points lost per SILENT_FAILURE
    operator: str
    seq: int  # how many times the cluster was configured before; makes the key unique
    participation_reward: int  # milli-points regained per consensus transaction a member voted on (R9)
    floor_ban_after: int  # 0: silence never bans; k: ban below the floor after k silent consensus txs in a row

    @property
    def key(self) -> str:
        return f"config:{self.seq}"


@dataclass(frozen=True)
class MemberAdmitted(Event):
    TYPE = "MemberAdmitted"
    node_id: str
    vote_key: str  # Ed25519 public key, hex
    peer_id: str
    operator: str
    seq: int  # admissions of this node before (a removed member may be admitted again)

    @property
    def key(self) -> str:
        return f"admit:{self.node_id}:{self.seq}"


@dataclass(frozen=True)
class MemberRemoved(Event):
    TYPE = "MemberRemoved"
    node_id: str
    operator: str
    reason: str
    seq: int

    @property
    def key(self) -> str:
        return f"remove:{self.node_id}:{self.seq}"


@dataclass(frozen=True)
class NodeBanned(Event):
    TYPE = "NodeBanned"
    node_id: str
    peer_id: str
    reason: str  # the violation kind, or REPUTATION_FLOOR
    cause: str  # idempotency key of the event that caused it

    @property
    def key(self) -> str:
        return f"ban:{self.node_id}:{self.cause}"


@dataclass(frozen=True)
class NodeUnbanned(Event):
    TYPE = "NodeUnbanned"
    node_id: str
    operator: str
    reason: str
    seq: int

    @property
    def key(self) -> str:
        return f"unban:{self.node_id}:{self.seq}"


@dataclass(frozen=True)
class ReputationChanged(Event):
    TYPE = "ReputationChanged"
    VERSION = 2  # v1 stored `score` as a float in 0..1; see events.upcast
    node_id: str
    score: int  # milli-points after the change, 0..1000
    delta: int
    reason: str
    cause: str

    @property
    def key(self) -> str:
        return f"rep:{self.node_id}:{self.reason}:{self.cause}"


@dataclass(frozen=True)
class WriterAdmitted(Event):
    """An operator or submitter may now write the log with this key (R13). The first one is self-admitted."""

    TYPE = "WriterAdmitted"
    writer: str  # operator:<name> | submitter:<name>
    role: str  # events.vocab.WriterRole
    public_key: str  # Ed25519, hex
    operator: str
    seq: int

    @property
    def key(self) -> str:
        return f"writer:{self.writer}:{self.seq}"


@dataclass(frozen=True)
class WriterRevoked(Event):
    TYPE = "WriterRevoked"
    writer: str
    operator: str
    reason: str
    seq: int

    @property
    def key(self) -> str:
        return f"writer-revoked:{self.writer}:{self.seq}"


@dataclass(frozen=True)
class InvalidEntryReported(Event):
    """R13: ``writer`` signed the log entry at ``position``, and the rules do not produce it.

    Every honest follower found the same (the entry is void for all of them alike); the report makes
    it a violation of its writer. Evidence is the entry itself, in the log at ``position``.
    """

    TYPE = "InvalidEntryReported"
    position: int
    writer: str
    reason: str

    @property
    def key(self) -> str:
        return f"invalid-entry:{self.position}"


# --- one transaction (stream "tx:<tx_id>") -----------------------------------------------------


@dataclass(frozen=True)
class TransactionOpened(Event):
    TYPE = "TransactionOpened"
    tx_id: str
    opened_at_ms: int
    deadline_at_ms: int

    @property
    def key(self) -> str:
        return f"open:{self.tx_id}"


@dataclass(frozen=True)
class VoteAccepted(Event):
    TYPE = "VoteAccepted"
    tx_id: str
    node_id: str
    value: int
    vote: dict[str, Any]  # the signed vote (events.vote.SignedVote.to_json): the evidence
    author_peer: str  # gossip author that delivered it

    @property
    def key(self) -> str:
        # R3: the same (tx, node, value) is one vote, whatever the signature's timestamp.
        return f"vote:{self.tx_id}:{self.node_id}:{self.value}"


@dataclass(frozen=True)
class ViolationDetected(Event):
    TYPE = "ViolationDetected"
    tx_id: str
    kind: str  # DOUBLE_VOTING | MINORITY_VOTE | INVALID_SIGNATURE | SILENT_FAILURE
    node_id: str  # the member blamed (for INVALID_SIGNATURE: the author peer's member, R7)
    peer_id: str
    evidence: dict[str, Any]

    @property
    def key(self) -> str:
        if self.kind == "INVALID_SIGNATURE":
            # Each forged vote is its own violation; the signature identifies it.
            return f"violation:{self.kind}:{self.tx_id}:{self.node_id}:{self.evidence['vote']['signature']}"
        return f"violation:{self.kind}:{self.tx_id}:{self.node_id}"


@dataclass(frozen=True)
class ThresholdReached(Event):
    TYPE = "ThresholdReached"
    tx_id: str
    value: int
    voters: tuple[str, ...]
    certificate_hash: str

    @property
    def key(self) -> str:
        return f"threshold:{self.tx_id}"


@dataclass(frozen=True)
class TransactionAborted(Event):
    TYPE = "TransactionAborted"
    tx_id: str
    reason: str  # BYZANTINE | NO_QUORUM
    detail: str

    @property
    def key(self) -> str:
        return f"abort:{self.tx_id}"


@dataclass(frozen=True)
class DeadlinePassed(Event):
    TYPE = "DeadlinePassed"
    tx_id: str
    deadline_at_ms: int
    silent: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"deadline:{self.tx_id}"


@dataclass(frozen=True)
class SilenceWithdrawn(Event):
    """A SILENT_FAILURE no longer in force: the member's vote, signed before the deadline, reached the log late.

    R9: a store outage or a partition must not blame anyone for votes signed before the deadline.
    The deadline is judged with the log as it was; a vote held back by an outage or a partition on
    the voter's side arrives after it, and its signed timestamp (the voter's own word: a member can
    only undo its own penalty with it) shows it was on time. ``vote`` is that signed vote.
    """

    TYPE = "SilenceWithdrawn"
    tx_id: str
    node_id: str
    vote: dict[str, Any]
    deadline_at_ms: int

    @property
    def key(self) -> str:
        return f"withdrawn:{self.tx_id}:{self.node_id}"


@dataclass(frozen=True)
class TransactionExpired(Event):
    TYPE = "TransactionExpired"
    tx_id: str
    deadline_at_ms: int

    @property
    def key(self) -> str:
        return f"expired:{self.tx_id}"


@dataclass(frozen=True)
class SubmissionStarted(Event):
    TYPE = "SubmissionStarted"
    tx_id: str
    value: int
    submitter: str
    lock_revision: int  # etcd revision of the lock key: the fencing token

    @property
    def key(self) -> str:
        return f"sub-start:{self.tx_id}:{self.lock_revision}"


@dataclass(frozen=True)
class SubmissionSigned(Event):
    TYPE = "SubmissionSigned"
    tx_id: str
    lock_revision: int
    chain_id: int
    sender: str
    nonce: int
    tx_hash: str
    raw_tx: str  # hex; recorded before broadcast (R11)

    @property
    def key(self) -> str:
        return f"sub-signed:{self.tx_id}:{self.tx_hash}"


@dataclass(frozen=True)
class SubmissionBroadcast(Event):
    TYPE = "SubmissionBroadcast"
    tx_id: str
    lock_revision: int
    tx_hash: str

    @property
    def key(self) -> str:
        return f"sub-broadcast:{self.tx_id}:{self.tx_hash}:{self.lock_revision}"


@dataclass(frozen=True)
class SubmissionConfirmed(Event):
    TYPE = "SubmissionConfirmed"
    tx_id: str
    lock_revision: int
    tx_hash: str
    block_number: int

    @property
    def key(self) -> str:
        return f"sub-confirmed:{self.tx_id}"


@dataclass(frozen=True)
class SubmissionFailed(Event):
    TYPE = "SubmissionFailed"
    tx_id: str
    lock_revision: int
    error: str
    retryable: bool
    attempt: int

    @property
    def key(self) -> str:
        return f"sub-failed:{self.tx_id}:{self.lock_revision}:{self.attempt}"


@dataclass(frozen=True)
class RetentionApplied(Event):
    """Projection rows older than the cutoffs move to the archive tables (seed Algorithm 7).

    An event, not a cron job on the tables, so a replay archives exactly the same rows (R12).
    The log itself is never rewritten.
    """

    TYPE = "RetentionApplied"
    submissions_before_ms: int  # CONFIRMED submissions confirmed before this are archived
    votes_before_ms: int  # vote history received before this is archived
    operator: str
    seq: int

    @property
    def key(self) -> str:
        return f"retention:{self.seq}"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        ClusterConfigured,
        MemberAdmitted,
        MemberRemoved,
        NodeBanned,
        NodeUnbanned,
        ReputationChanged,
        TransactionOpened,
        VoteAccepted,
        ViolationDetected,
        ThresholdReached,
        TransactionAborted,
        DeadlinePassed,
        SilenceWithdrawn,
        TransactionExpired,
        SubmissionStarted,
        SubmissionSigned,
        SubmissionBroadcast,
        SubmissionConfirmed,
        SubmissionFailed,
        RetentionApplied,
        WriterAdmitted,
        WriterRevoked,
        InvalidEntryReported,
    )
}
