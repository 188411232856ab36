"""The protocol as pure functions: ``decide(state, command) -> events``, ``evolve(state, event) -> state``.

This module is the only place where the rules of ``RESOLUTIONS.md`` (R1-R13) live. It does
no I/O and reads no clock: time arrives inside commands (``now_ms``). The node, the
projector and the submitter are shells around it. Each rule is marked with its R-number.

``decide`` raises a :class:`~events.errors.CommandRejected` subclass for input that must
change nothing (bad input, outsiders, banned senders, stale fencing tokens); otherwise it
returns the events that record the decision, possibly none (R3: a repeated vote).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from events import errors
from events.envelope import Envelope, authored
from events.identity import check_peer_id, peer_id_bytes
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
from events.vocab import (
    ABORTABLE,
    FINAL,
    AbortReason,
    BanReason,
    ReputationReason,
    TxStatus,
    ViolationKind,
    WriterRole,
)
from events.vote import KEY_LEN, SignedVote, certificate_hash, check_node_id, check_tx_id
from events.writers import operator_writer, submitter_writer

__all__ = ["ABORTABLE", "FINAL"]  # re-exported for the shells, with the aliases below

# The protocol's names live in events.vocab; short aliases keep the rules readable.
COLLECTING = TxStatus.COLLECTING
THRESHOLD_REACHED = TxStatus.THRESHOLD_REACHED
SUBMITTING = TxStatus.SUBMITTING
CONFIRMED = TxStatus.CONFIRMED
ABORTED_BYZANTINE = TxStatus.ABORTED_BYZANTINE
ABORTED_NO_QUORUM = TxStatus.ABORTED_NO_QUORUM
EXPIRED = TxStatus.EXPIRED
DOUBLE_VOTING = ViolationKind.DOUBLE_VOTING
MINORITY_VOTE = ViolationKind.MINORITY_VOTE
INVALID_SIGNATURE = ViolationKind.INVALID_SIGNATURE
SILENT_FAILURE = ViolationKind.SILENT_FAILURE
REPUTATION_FLOOR = BanReason.REPUTATION_FLOOR

FULL_REPUTATION = 1000  # milli-points
MAX_TEXT = 256


# --- state -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    threshold: int
    deadline_ms: int
    reputation_floor: int  # below it operators are alerted; a ban only with floor_ban_after > 0 (R9)
    silent_penalty: int
    participation_reward: int = 0
    floor_ban_after: int = 0  # 0: silence never bans


@dataclass(frozen=True)
class Member:
    node_id: str
    vote_key: bytes
    peer_id: str
    active: bool = True  # False once removed by an operator
    banned: bool = False
    reputation: int = FULL_REPUTATION
    admissions: int = 1
    removals: int = 0
    unbans: int = 0
    silent_streak: int = 0  # consensus transactions missed in a row since it last took part (R9)

    @property
    def eligible(self) -> bool:
        """Counts toward a quorum and is expected to vote (R9, R10)."""
        return self.active and not self.banned


@dataclass(frozen=True)
class Writer:
    """An operator or submitter admitted to write the log (R13); trustees write as members."""

    writer: str
    role: WriterRole
    public_key: bytes
    active: bool = True
    admissions: int = 1
    revocations: int = 0


@dataclass(frozen=True)
class Fault:
    """A log entry its writer signed that the rules do not produce (found by every honest follower alike)."""

    writer: str
    reason: str


@dataclass(frozen=True)
class Cluster:
    config: Config | None = None
    config_seq: int = 0
    retention_seq: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    writers: dict[str, Writer] = field(default_factory=dict)
    # Signed entries found invalid, not yet reported (position -> fault). Set by the follower's check of
    # the log itself (events.follow), the same for every honest follower, and read by ReportInvalidEntry.
    faults: dict[int, Fault] = field(default_factory=dict)

    def key_of(self, writer: str) -> bytes | None:
        """The key ``writer`` signs the log with: a member's vote key or an admitted writer's key."""
        m = self.members.get(writer)
        if m is not None and m.active:
            return m.vote_key
        w = self.writers.get(writer)
        return w.public_key if w is not None and w.active else None

    def has_operator(self) -> bool:
        return any(w.active and w.role == WriterRole.OPERATOR for w in self.writers.values())

    def member_by_peer(self, peer_id: str) -> Member | None:
        for m in self.members.values():
            if m.peer_id == peer_id and m.active:
                return m
        return None

    def eligible_count(self) -> int:
        return sum(1 for m in self.members.values() if m.eligible)


@dataclass(frozen=True)
class Tx:
    tx_id: str
    status: TxStatus
    opened_at_ms: int
    deadline_at_ms: int
    votes: dict[str, VoteAccepted] = field(default_factory=dict)
    flagged: frozenset[tuple[str, str]] = frozenset()  # (violation kind, node_id)
    value: int | None = None  # the consensus value, once reached
    deadline_fired: bool = False
    lock_revision: int = 0  # fencing token of the current submission claim
    signed: tuple[str, ...] = ()  # tx hashes signed so far (R11)
    nonce: tuple[int, str, int] | None = None  # (chain id, sender, nonce) of the first signature
    failures: int = 0
    # Members eligible when the transaction opened: only they can be silent on it (R9, R14). A member
    # admitted or unbanned later was never asked; its vote still counts if it sends one.
    expected: frozenset[str] = frozenset()


@dataclass(frozen=True)
class State:
    """What one decision reads: the cluster, and the transaction the command names (if any)."""

    cluster: Cluster = field(default_factory=Cluster)
    tx: Tx | None = None


# --- commands ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Configure:
    """R9 as revised: silence costs ``silent_penalty``, taking part earns ``participation_reward`` back;
    silence bans only if the operator opts in (``floor_ban_after`` consensus transactions missed in a
    row with the reputation below ``reputation_floor``)."""

    threshold: int
    operator: str
    deadline_ms: int = 30_000
    reputation_floor: int = 500
    silent_penalty: int = 100
    participation_reward: int = 50
    floor_ban_after: int = 0


@dataclass(frozen=True)
class AdmitMember:
    node_id: str
    vote_key: bytes
    peer_id: str
    operator: str


@dataclass(frozen=True)
class RemoveMember:
    node_id: str
    operator: str
    reason: str
    new_threshold: int | None = None


@dataclass(frozen=True)
class Unban:
    node_id: str
    operator: str
    reason: str


@dataclass(frozen=True)
class ReceiveVote:
    vote: SignedVote
    author_peer: str  # the libp2p peer whose envelope signature the router verified (R7)
    now_ms: int
    # The author's signed gossip envelope: needed to blame it for a forged vote (R7, events.envelope).
    envelope: Envelope | None = None

    @property
    def tx_id(self) -> str:
        return self.vote.vote.tx_id


@dataclass(frozen=True)
class CheckDeadline:
    tx_id: str
    now_ms: int


@dataclass(frozen=True)
class Reevaluate:
    """Ask again whether a value can still reach t (after bans or removals elsewhere, R6/R10)."""

    tx_id: str


@dataclass(frozen=True)
class StartSubmission:
    tx_id: str
    submitter: str
    lock_revision: int


@dataclass(frozen=True)
class RecordSigned:
    tx_id: str
    lock_revision: int
    chain_id: int
    sender: str
    nonce: int
    tx_hash: str
    raw_tx: str


@dataclass(frozen=True)
class RecordBroadcast:
    tx_id: str
    lock_revision: int
    tx_hash: str


@dataclass(frozen=True)
class RecordConfirmed:
    tx_id: str
    lock_revision: int
    tx_hash: str
    block_number: int


@dataclass(frozen=True)
class RecordFailed:
    tx_id: str
    lock_revision: int
    error: str
    retryable: bool


@dataclass(frozen=True)
class ApplyRetention:
    """Archive old projection rows: submissions after ``submission_days``, votes after ``vote_days``."""

    now_ms: int
    operator: str
    submission_days: int = 30
    vote_days: int = 90


@dataclass(frozen=True)
class AdmitWriter:
    """Admit an operator (``operator:<name>``) or submitter (``submitter:<name>``) key to write the log."""

    writer: str
    role: str
    public_key: bytes
    operator: str


@dataclass(frozen=True)
class RevokeWriter:
    writer: str
    operator: str
    reason: str


@dataclass(frozen=True)
class ReportInvalidEntry:
    """R13: make a signed log entry the rules do not produce a violation of its writer."""

    position: int
    writer: str
    reason: str


Command = (
    AdmitWriter
    | RevokeWriter
    | ReportInvalidEntry
    | ApplyRetention
    | Configure
    | AdmitMember
    | RemoveMember
    | Unban
    | ReceiveVote
    | CheckDeadline
    | Reevaluate
    | StartSubmission
    | RecordSigned
    | RecordBroadcast
    | RecordConfirmed
    | RecordFailed
)


# --- the quorum rule (R6), one function, three outcomes -----------------------------------------


@dataclass(frozen=True)
class Won:
    """Some value holds t votes of members that count."""

    value: int


@dataclass(frozen=True)
class Pending:
    """No value holds t yet, but one still can."""


@dataclass(frozen=True)
class Lost:
    """No value can reach t any more."""


PENDING = Pending()
LOST = Lost()


def quorum(votes: dict[str, VoteAccepted], members: dict[str, Member], threshold: int) -> Won | Pending | Lost:
    """Can some value reach t among members that still count?

    Only eligible members (active, not banned) count toward support, and only they can
    still vote (R10). ``Won(w)`` when w holds >= t of their votes; ``PENDING`` while the
    best value plus the members yet to vote could still reach t; ``LOST`` when no value
    can any more (R6: ABORTED_NO_QUORUM, nobody is blamed). Whether a Won is a consensus
    or a minority violation depends on the dissent, which the caller checks.
    """
    eligible = {n for n, m in members.items() if m.eligible}
    support = Counter(v.value for n, v in votes.items() if n in eligible)
    if support:
        # Ties cannot both reach t unless 2t <= N; pick deterministically by count, then value.
        value, count = max(support.items(), key=lambda kv: (kv[1], -kv[0]))
        if count >= threshold:
            return Won(value)
    undecided = len(eligible - votes.keys())
    best = max(support.values(), default=0)
    return PENDING if best + undecided >= threshold else LOST


# --- decide ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effects:
    """The fast path's part of a decision, returned with its events (as raft's ``Ready`` carries them).

    The rules say *what* to claim and count; the shell maps it onto its guard's keys
    (``recording.guard.Claim``): each accepted vote is claimed once cluster-wide (R13), and the
    seed's counters show a transaction's status and its votes per value.
    """

    claims: tuple[VoteAccepted, ...] = ()
    status: tuple[tuple[str, TxStatus], ...] = ()  # (transaction, its status after the decision)
    counts: tuple[tuple[str, int, int], ...] = ()  # (transaction, value, accepted votes for it after)


@dataclass(frozen=True)
class Decision:
    events: list[Event]
    effects: Effects


class _Decision:
    """Accumulates events, evolving the state as it goes so later rules see earlier events."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self.state = evolve(self.state, event)

    @property
    def tx(self) -> Tx:
        assert self.state.tx is not None
        return self.state.tx

    @property
    def cluster(self) -> Cluster:
        return self.state.cluster

    def ban(self, node_id: str, reason: BanReason, cause: Event) -> None:
        """Ban once; a Byzantine ban drops reputation to 0 (seed 3.3). Bans last until lifted (R10)."""
        m = self.cluster.members[node_id]
        if m.banned:
            return
        self.emit(NodeBanned(node_id, m.peer_id, reason, cause.key))
        if m.reputation and reason != REPUTATION_FLOOR:
            self.emit(ReputationChanged(node_id, 0, -m.reputation, ReputationReason(reason), cause.key))

    def effects(self) -> Effects:
        tx = self.state.tx
        if tx is None or not any(getattr(e, "tx_id", None) == tx.tx_id for e in self.events):
            return Effects()
        claims = tuple(e for e in self.events if isinstance(e, VoteAccepted))
        counts = tuple((tx.tx_id, e.value, sum(1 for v in tx.votes.values() if v.value == e.value)) for e in claims)
        return Effects(claims, ((tx.tx_id, tx.status),), counts)

    def abort_if_abortable(self, reason: AbortReason, detail: str) -> None:
        if self.tx.status in ABORTABLE:  # R8: after SubmissionStarted the submission goes on
            self.emit(TransactionAborted(self.tx.tx_id, reason, detail))

    def evaluate(self) -> None:
        """Apply R5 and R6 to the transaction as it now stands."""
        tx, cfg = self.tx, _config(self.cluster)
        # Once consensus is recorded its value stands as w (R6), even if a voter for it is
        # banned later for something else; dissent from it is a minority vote (R5).
        outcome = Won(tx.value) if tx.value is not None else quorum(tx.votes, self.cluster.members, cfg.threshold)
        if isinstance(outcome, Won):
            w = outcome.value
            dissent = sorted(n for n, v in tx.votes.items() if v.value != w)
            for n in dissent:  # R5: flagged whatever the order the votes arrived in
                if (MINORITY_VOTE, n) in self.tx.flagged:
                    continue
                counts = Counter(v.value for v in self.tx.votes.values())
                m = self.cluster.members[n]
                viol = ViolationDetected(
                    tx.tx_id,
                    MINORITY_VOTE,
                    n,
                    m.peer_id,
                    {
                        "vote": self.tx.votes[n].vote,
                        "majority_value": w,
                        "counts": {str(k): c for k, c in sorted(counts.items())},
                    },
                )
                self.emit(viol)
                self.ban(n, BanReason.MINORITY_VOTE, viol)
            if dissent:
                self.abort_if_abortable(AbortReason.BYZANTINE, f"{MINORITY_VOTE} against {w}")
            elif self.tx.status == COLLECTING:  # R6: uniform, recorded once
                # The certificate names the votes that counted: eligible members only (R10).
                members = self.cluster.members
                voters = tuple(sorted(n for n, v in self.tx.votes.items() if v.value == w and members[n].eligible))
                cert = certificate_hash([SignedVote.from_json(self.tx.votes[n].vote) for n in voters])
                self.emit(ThresholdReached(tx.tx_id, w, voters, cert))
        elif outcome == LOST and self.tx.status == COLLECTING:
            self.emit(TransactionAborted(tx.tx_id, AbortReason.NO_QUORUM, "no value can reach t any more"))


def decide(state: State, command: Command) -> list[Event]:
    return _run(state, command).events


def _run(state: State, command: Command) -> _Decision:
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise errors.InvalidCommand(f"unknown command {type(command).__name__}")
    d = _Decision(state)
    handler(d, command)
    return d


def _config(cluster: Cluster) -> Config:
    if cluster.config is None:
        raise errors.NotConfigured("the cluster has no threshold configured yet")
    return cluster.config


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise errors.InvalidCommand(f"{name} must be a non-empty string of at most {MAX_TEXT} characters")
    return value


def _int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise errors.InvalidCommand(f"{name} must be an integer in {lo}..{hi}, got {errors.show(value, 40)}")
    return value


def _configure(d: _Decision, c: Configure) -> None:
    n = d.cluster.eligible_count()
    if n == 0:
        raise errors.CommandRejected("admit members before configuring the threshold (1 <= t <= N)")
    _int("threshold", c.threshold, 1, n)
    _int("deadline_ms", c.deadline_ms, 1, 86_400_000)
    _int("reputation_floor", c.reputation_floor, 0, FULL_REPUTATION)
    _int("silent_penalty", c.silent_penalty, 0, FULL_REPUTATION)
    _int("participation_reward", c.participation_reward, 0, FULL_REPUTATION)
    _int("floor_ban_after", c.floor_ban_after, 0, 1_000_000)
    d.emit(
        ClusterConfigured(
            c.threshold,
            c.deadline_ms,
            c.reputation_floor,
            c.silent_penalty,
            _text("operator", c.operator),
            d.cluster.config_seq,
            c.participation_reward,
            c.floor_ban_after,
        )
    )


def _admit(d: _Decision, c: AdmitMember) -> None:
    """R1: the admitted triple must agree: a trustee's libp2p peer id derives from its vote key, so a
    typo in either is refused here, before it is logged (a bad peer id once crashed every node at ban)."""
    check_node_id(c.node_id)
    _text("operator", c.operator)
    _text("peer_id", c.peer_id)
    if not isinstance(c.vote_key, bytes) or len(c.vote_key) != KEY_LEN:
        raise errors.InvalidCommand("vote_key must be a 32-byte Ed25519 public key")
    check_peer_id(c.peer_id, c.vote_key)
    existing = d.cluster.members.get(c.node_id)
    if existing is not None and existing.active:
        raise errors.CommandRejected(f"{c.node_id} is already a member")
    for m in d.cluster.members.values():
        if m.active and (m.peer_id == c.peer_id or m.vote_key == c.vote_key):
            raise errors.CommandRejected(f"peer id or vote key already belongs to {m.node_id}")
    seq = existing.admissions if existing else 0
    d.emit(MemberAdmitted(c.node_id, c.vote_key.hex(), c.peer_id, c.operator, seq))


def _remove(d: _Decision, c: RemoveMember) -> None:
    m = d.cluster.members.get(check_node_id(c.node_id))
    if m is None or not m.active:
        raise errors.CommandRejected(f"{errors.show(c.node_id)} is not a member")
    _text("operator", c.operator)
    _text("reason", c.reason)
    cfg = d.cluster.config
    remaining = d.cluster.eligible_count() - (1 if m.eligible else 0)
    new_t = c.new_threshold if c.new_threshold is not None else (cfg.threshold if cfg else None)
    if remaining < 1:
        raise errors.CommandRejected("cannot remove the last eligible member")
    if new_t is not None and not (isinstance(new_t, int) and not isinstance(new_t, bool) and 1 <= new_t <= remaining):
        raise errors.CommandRejected(
            f"removing {c.node_id} leaves {remaining} eligible members; threshold {errors.show(new_t, 40)} needs "
            f"1 <= t <= {remaining}: pass a new threshold"
        )
    d.emit(MemberRemoved(c.node_id, c.operator, c.reason, m.removals))
    if cfg is not None and new_t != cfg.threshold:
        d.emit(
            ClusterConfigured(
                new_t, cfg.deadline_ms, cfg.reputation_floor, cfg.silent_penalty, c.operator,
                d.cluster.config_seq, cfg.participation_reward, cfg.floor_ban_after,
            )
        )


def _unban(d: _Decision, c: Unban) -> None:
    m = d.cluster.members.get(check_node_id(c.node_id))
    if m is None or not m.banned:
        raise errors.CommandRejected(f"{errors.show(c.node_id)} is not banned")
    ev = NodeUnbanned(c.node_id, _text("operator", c.operator), _text("reason", c.reason), m.unbans)
    d.emit(ev)
    d.emit(ReputationChanged(c.node_id, FULL_REPUTATION, FULL_REPUTATION - m.reputation, ReputationReason.UNBANNED,
                             ev.key))


def _receive_vote(d: _Decision, c: ReceiveVote) -> None:
    cfg = _config(d.cluster)
    _int("now_ms", c.now_ms, 0, 2**63 - 1)
    if not isinstance(c.vote, SignedVote):
        raise errors.InvalidCommand("vote must be a SignedVote")
    vote = c.vote.vote
    author = d.cluster.member_by_peer(c.author_peer) if isinstance(c.author_peer, str) else None
    if author is None:
        raise errors.OutsiderVote("gossip author is not a member (R1)")
    if author.banned:
        raise errors.BannedSender(f"author {author.node_id} is banned (R10)")
    voter = d.cluster.members.get(vote.node_id)
    if voter is None or not voter.active:
        raise errors.OutsiderVote(f"{vote.node_id} is not a member (R1)")
    if voter.banned:
        raise errors.BannedSender(f"{vote.node_id} is banned (R10)")

    if not c.vote.verifies_under(voter.vote_key):
        # R7: anyone can forge a bad signature in a member's name; blame the author peer, and only
        # with its signed envelope as proof: a recorder's word that "X sent it" would let a Byzantine
        # recorder blame any honest member for a forgery of its own (R14).
        proof = c.envelope
        why = "no envelope" if not isinstance(proof, Envelope) else authored(
            proof, author.vote_key, peer_id_bytes(author.vote_key), c.vote.to_json())
        if why is not None:
            raise errors.UnprovenForgery(f"a vote that does not verify, without proof of its author ({why}): "
                                         "dropped, nobody blamed (R7)")
        viol = ViolationDetected(
            vote.tx_id,
            INVALID_SIGNATURE,
            author.node_id,
            author.peer_id,
            {"vote": c.vote.to_json(), "claimed_node": vote.node_id, "envelope": proof.to_json()},
        )
        d.emit(viol)
        d.ban(author.node_id, BanReason.INVALID_SIGNATURE, viol)
        if d.state.tx is not None and d.tx.status == COLLECTING:
            d.evaluate()  # the ban may leave too few members (R6)
        return

    if d.state.tx is None:
        d.emit(TransactionOpened(vote.tx_id, c.now_ms, c.now_ms + cfg.deadline_ms))

    prior = d.tx.votes.get(vote.node_id)
    if prior is not None:
        if prior.value == vote.value:
            return  # R3: idempotent, whatever the timestamp
        # R4: equivocation, in whatever state the transaction is.
        viol = ViolationDetected(
            vote.tx_id,
            DOUBLE_VOTING,
            vote.node_id,
            voter.peer_id,
            {"first": prior.vote, "second": c.vote.to_json()},
        )
        d.emit(viol)
        d.ban(vote.node_id, BanReason.DOUBLE_VOTING, viol)
        d.abort_if_abortable(AbortReason.BYZANTINE, f"{DOUBLE_VOTING} by {vote.node_id}")
        return

    d.emit(VoteAccepted(vote.tx_id, vote.node_id, vote.value, c.vote.to_json(), author.peer_id))
    d.evaluate()
    _withdraw_silence(d, c.vote)


def _withdraw_silence(d: _Decision, sv: SignedVote) -> None:
    """R9: a late vote signed before the deadline for the consensus value was on time: its silence is withdrawn.

    The deadline was judged with the log as it stood; an outage or a partition on the voter's side
    held this vote back (R14: silence only for a vote not cast in time). The timestamp is the
    voter's own signed word, so a member can only undo its own penalty with it, never anyone
    else's, and never for another value (that one is a MINORITY_VOTE). A floor ban it caused
    stays until an operator lifts it (R10); ``tvote status`` shows its cause withdrawn.
    """
    tx, vote = d.tx, sv.vote
    if (SILENT_FAILURE, vote.node_id) not in tx.flagged or vote.value != tx.value \
            or vote.timestamp_ms > tx.deadline_at_ms:
        return
    cfg = _config(d.cluster)
    m = d.cluster.members[vote.node_id]
    withdrawn = SilenceWithdrawn(tx.tx_id, vote.node_id, sv.to_json(), tx.deadline_at_ms)
    d.emit(withdrawn)
    score = min(FULL_REPUTATION, m.reputation + cfg.silent_penalty + cfg.participation_reward)
    d.emit(ReputationChanged(vote.node_id, score, score - m.reputation, ReputationReason.SILENCE_WITHDRAWN,
                             withdrawn.key))


def _require_tx(d: _Decision, tx_id: str) -> Tx:
    check_tx_id(tx_id)
    if d.state.tx is None or d.state.tx.tx_id != tx_id:
        raise errors.UnknownTransaction(f"no transaction {tx_id}")
    return d.state.tx


def _check_deadline(d: _Decision, c: CheckDeadline) -> None:
    """R9 as revised: fires once; silence counts only on a transaction that reached consensus.

    t members found such a transaction real, so a member that did not vote on it by the deadline
    is silent: SILENT_FAILURE and ``silent_penalty`` off its reputation, while every member that
    voted the consensus value earns ``participation_reward`` back (reputation measures recent
    behaviour; a restarted honest node recovers by voting). A transaction that never reached t
    accuses nobody: still collecting, it EXPIRES. Only members eligible both when the transaction
    opened and now can be silent (one admitted or unbanned since was never asked). Silence bans
    only if the operator opted in, after ``floor_ban_after`` consensus transactions missed in a
    row with the reputation below the floor. (Store outages never trip a deadline: the shells decide when to ask, see
    docs/decisions.md.)
    """
    cfg = _config(d.cluster)
    tx = _require_tx(d, c.tx_id)
    _int("now_ms", c.now_ms, 0, 2**63 - 1)
    if tx.deadline_fired or c.now_ms < tx.deadline_at_ms:
        return  # R9: fires exactly once, and not before its time
    members = d.cluster.members
    consensus = tx.value is not None
    silent = tuple(sorted(n for n, m in members.items()
                          if m.eligible and n in tx.expected and n not in tx.votes)) if consensus else ()
    passed = DeadlinePassed(tx.tx_id, tx.deadline_at_ms, silent)
    d.emit(passed)
    if consensus:
        for n in sorted(n for n, v in tx.votes.items() if v.value == tx.value and members[n].eligible):
            m = d.cluster.members[n]
            score = min(FULL_REPUTATION, m.reputation + cfg.participation_reward)
            if score != m.reputation or m.silent_streak:
                d.emit(ReputationChanged(n, score, score - m.reputation, ReputationReason.PARTICIPATION, passed.key))
    for n in silent:
        m = d.cluster.members[n]
        viol = ViolationDetected(tx.tx_id, SILENT_FAILURE, n, m.peer_id, {"deadline_at_ms": tx.deadline_at_ms})
        d.emit(viol)
        # Always recorded, even at 0: the streak of missed consensus transactions lives on the cluster stream.
        score = max(0, m.reputation - cfg.silent_penalty)
        d.emit(ReputationChanged(n, score, score - m.reputation, ReputationReason.SILENT_FAILURE, viol.key))
        if cfg.floor_ban_after and score < cfg.reputation_floor \
                and d.cluster.members[n].silent_streak >= cfg.floor_ban_after:
            d.ban(n, REPUTATION_FLOOR, viol)
    if d.tx.status == COLLECTING:
        d.emit(TransactionExpired(tx.tx_id, tx.deadline_at_ms))


def _reevaluate(d: _Decision, c: Reevaluate) -> None:
    _config(d.cluster)
    _require_tx(d, c.tx_id)
    if d.tx.status == COLLECTING:
        d.evaluate()


def _start_submission(d: _Decision, c: StartSubmission) -> None:
    tx = _require_tx(d, c.tx_id)
    _text("submitter", c.submitter)
    _int("lock_revision", c.lock_revision, 1, 2**63 - 1)
    if tx.status == SUBMITTING:
        if c.lock_revision <= tx.lock_revision:
            raise errors.StaleLock(f"claim at revision {c.lock_revision} <= current {tx.lock_revision}")
    elif tx.status != THRESHOLD_REACHED:
        raise errors.NotSubmittable(f"{tx.tx_id} is {tx.status}")  # R8: an aborted tx is never submitted
    assert tx.value is not None
    d.emit(SubmissionStarted(tx.tx_id, tx.value, c.submitter, c.lock_revision))


def _fenced(d: _Decision, tx_id: str, lock_revision: int) -> Tx:
    tx = _require_tx(d, tx_id)
    _int("lock_revision", lock_revision, 1, 2**63 - 1)
    if tx.status != SUBMITTING:
        raise errors.NotSubmittable(f"{tx.tx_id} is {tx.status}")
    if lock_revision != tx.lock_revision:
        raise errors.StaleLock(f"lock revision {lock_revision} is not the current claim {tx.lock_revision}")
    return tx


def _record_signed(d: _Decision, c: RecordSigned) -> None:
    tx = _fenced(d, c.tx_id, c.lock_revision)
    _int("chain_id", c.chain_id, 1, 2**63 - 1)
    _int("nonce", c.nonce, 0, 2**63 - 1)
    if tx.nonce is not None and tx.nonce != (c.chain_id, c.sender, c.nonce):
        # R11: a later signature may only replace the first at the same nonce (a fee bump),
        # so at most one of them can ever be mined.
        raise errors.CommandRejected(f"{tx.tx_id} was signed at nonce {tx.nonce[2]} by {tx.nonce[1]}; "
                                     "a replacement must use the same chain, sender and nonce")
    d.emit(
        SubmissionSigned(
            c.tx_id, c.lock_revision, c.chain_id, _text("sender", c.sender), c.nonce,
            _text("tx_hash", c.tx_hash), _hex("raw_tx", c.raw_tx),
        )
    )


def _hex(name: str, value: object) -> str:
    if not isinstance(value, str) or len(value) > 1_000_000:
        raise errors.InvalidCommand(f"{name} must be a hex string")
    try:
        bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise errors.InvalidCommand(f"{name} must be a hex string") from None
    return value


def _record_broadcast(d: _Decision, c: RecordBroadcast) -> None:
    tx = _fenced(d, c.tx_id, c.lock_revision)
    if c.tx_hash not in tx.signed:
        raise errors.CommandRejected("broadcast of a transaction that was never recorded as signed (R11)")
    d.emit(SubmissionBroadcast(c.tx_id, c.lock_revision, c.tx_hash))


def _record_confirmed(d: _Decision, c: RecordConfirmed) -> None:
    tx = _fenced(d, c.tx_id, c.lock_revision)
    _int("block_number", c.block_number, 0, 2**63 - 1)
    if c.tx_hash not in tx.signed:
        raise errors.CommandRejected("confirmation of a transaction that was never recorded as signed (R11)")
    d.emit(SubmissionConfirmed(c.tx_id, c.lock_revision, c.tx_hash, c.block_number))


def _record_failed(d: _Decision, c: RecordFailed) -> None:
    tx = _fenced(d, c.tx_id, c.lock_revision)
    error = c.error[:MAX_TEXT] if isinstance(c.error, str) else c.error
    if not isinstance(c.retryable, bool):
        raise errors.InvalidCommand("retryable must be true or false")
    d.emit(SubmissionFailed(c.tx_id, c.lock_revision, _text("error", error), c.retryable, tx.failures))


def _apply_retention(d: _Decision, c: ApplyRetention) -> None:
    _int("now_ms", c.now_ms, 0, 2**63 - 1)
    _int("submission_days", c.submission_days, 1, 36_500)
    _int("vote_days", c.vote_days, 1, 36_500)
    day = 86_400_000
    d.emit(RetentionApplied(c.now_ms - c.submission_days * day, c.now_ms - c.vote_days * day,
                            _text("operator", c.operator), d.cluster.retention_seq))


def _admit_writer(d: _Decision, c: AdmitWriter) -> None:
    _text("operator", c.operator)
    try:
        role = WriterRole(c.role)
    except ValueError:
        raise errors.InvalidCommand(f"role must be {WriterRole.OPERATOR} or {WriterRole.SUBMITTER}") from None
    prefix = {WriterRole.OPERATOR: operator_writer(""), WriterRole.SUBMITTER: submitter_writer("")}.get(role)
    if prefix is None:
        raise errors.InvalidCommand("trustees write as members (tvote members add), not as writers")
    name = _text("writer", c.writer).removeprefix(prefix)
    if not c.writer.startswith(prefix) or not name:
        raise errors.InvalidCommand(f"a {role} writer is named {prefix}<name>, got {errors.show(c.writer)}")
    check_node_id(name)
    if not isinstance(c.public_key, bytes) or len(c.public_key) != KEY_LEN:
        raise errors.InvalidCommand("public_key must be a 32-byte Ed25519 public key")
    existing = d.cluster.writers.get(c.writer)
    if existing is not None and existing.active:
        raise errors.CommandRejected(f"{c.writer} is already a writer")
    if any(w.active and w.public_key == c.public_key for w in d.cluster.writers.values()) or any(
            m.active and m.vote_key == c.public_key for m in d.cluster.members.values()):
        raise errors.CommandRejected("that key already writes the log under another name")
    d.emit(WriterAdmitted(c.writer, role, c.public_key.hex(), c.operator, existing.admissions if existing else 0))


def _revoke_writer(d: _Decision, c: RevokeWriter) -> None:
    w = d.cluster.writers.get(_text("writer", c.writer))
    if w is None or not w.active:
        raise errors.CommandRejected(f"{errors.show(c.writer)} is not a writer")
    others = [o for o in d.cluster.writers.values() if o.active and o.role == WriterRole.OPERATOR and o is not w]
    if w.role == WriterRole.OPERATOR and not others:
        raise errors.CommandRejected("cannot revoke the last operator: admit another first")
    d.emit(WriterRevoked(c.writer, _text("operator", c.operator), _text("reason", c.reason), w.revocations))


def _report_invalid_entry(d: _Decision, c: ReportInvalidEntry) -> None:
    _int("position", c.position, 1, 2**63 - 1)
    fault = d.cluster.faults.get(c.position)
    if fault is None or fault != Fault(c.writer, c.reason):
        raise errors.CommandRejected(f"no unreported invalid entry of {errors.show(c.writer)} at {c.position}")
    report = InvalidEntryReported(c.position, c.writer, c.reason)
    d.emit(report)
    m = d.cluster.members.get(c.writer)
    if m is not None and m.active:
        d.ban(c.writer, BanReason.INVALID_ENTRY, report)  # a trustee that signs what the rules never produce


def authorize(cluster: Cluster, writer: str, command: Command) -> None:
    """R13: may ``writer`` write ``command``? Raises NotEntitled; followers void entries that fail this.

    Trustees (eligible members, signing with their vote keys) record votes, deadlines, re-evaluations
    and reports; submitters the submission steps, under their own name; operators everything else,
    under their own name. The very first operator admits itself (the log's genesis).
    """
    match command:
        case ReceiveVote() | CheckDeadline() | Reevaluate() | ReportInvalidEntry():
            m = cluster.members.get(writer)
            if m is None or not m.eligible:
                raise errors.NotEntitled(f"{errors.show(writer)} is not an eligible trustee: it may not record "
                                         f"{type(command).__name__}")
            if isinstance(command, ReportInvalidEntry) and command.writer == writer:
                raise errors.NotEntitled("a writer does not report itself")
        case StartSubmission() | RecordSigned() | RecordBroadcast() | RecordConfirmed() | RecordFailed():
            _require_writer(cluster, writer, WriterRole.SUBMITTER)
            if isinstance(command, StartSubmission) and submitter_writer(str(command.submitter)) != writer:
                raise errors.NotEntitled(f"{writer} claims a submission as {errors.show(command.submitter)}")
        case AdmitWriter() if command.role == WriterRole.OPERATOR and not cluster.has_operator():
            if command.writer != writer:
                raise errors.NotEntitled("the first operator admits itself, with the key it signs with")
        case (Configure() | AdmitMember() | RemoveMember() | Unban() | ApplyRetention() | AdmitWriter()
              | RevokeWriter()):
            _require_writer(cluster, writer, WriterRole.OPERATOR)
            if operator_writer(str(command.operator)) != writer:
                raise errors.NotEntitled(f"{writer} acts as operator {errors.show(command.operator)}")
        case _:
            raise errors.InvalidCommand(f"unknown command {type(command).__name__}")


def _require_writer(cluster: Cluster, writer: str, role: WriterRole) -> None:
    w = cluster.writers.get(writer)
    if w is None or not w.active or w.role != role:
        raise errors.NotEntitled(f"{errors.show(writer)} is not an admitted {role}")


_HANDLERS: dict[type, Any] = {
    AdmitWriter: _admit_writer,
    RevokeWriter: _revoke_writer,
    ReportInvalidEntry: _report_invalid_entry,
    ApplyRetention: _apply_retention,
    Configure: _configure,
    AdmitMember: _admit,
    RemoveMember: _remove,
    Unban: _unban,
    ReceiveVote: _receive_vote,
    CheckDeadline: _check_deadline,
    Reevaluate: _reevaluate,
    StartSubmission: _start_submission,
    RecordSigned: _record_signed,
    RecordBroadcast: _record_broadcast,
    RecordConfirmed: _record_confirmed,
    RecordFailed: _record_failed,
}


# --- evolve ------------------------------------------------------------------------------------


def evolve(state: State, event: Event) -> State:
    """Fold one event into the state. Total over the events the decider writes.

    An event naming a member no earlier event admitted cannot have come from the decider;
    it is reported as InvalidCommand rather than folded (the log was written by something else).
    """
    try:
        return _evolve(state, event)
    except KeyError as e:
        raise errors.InvalidCommand(f"{event.TYPE} names unknown {e.args[0]!r:.80}") from None
    except ValueError as e:  # a name outside the vocabulary (events.vocab)
        raise errors.InvalidCommand(f"{event.TYPE}: {e}") from None


def _evolve(state: State, event: Event) -> State:
    """One case per event type; an event type without a case is refused, never silently ignored."""
    cl, tx = state.cluster, state.tx
    match event:
        case ClusterConfigured():
            cfg = Config(event.threshold, event.deadline_ms, event.reputation_floor, event.silent_penalty,
                         event.participation_reward, event.floor_ban_after)
            return replace(state, cluster=replace(cl, config=cfg, config_seq=cl.config_seq + 1))
        case MemberAdmitted():
            old = cl.members.get(event.node_id)
            m = Member(
                event.node_id,
                bytes.fromhex(event.vote_key),
                event.peer_id,
                admissions=(old.admissions + 1) if old else 1,
                removals=old.removals if old else 0,
                unbans=old.unbans if old else 0,
            )
            return _with_member(state, m)
        case MemberRemoved():
            m = cl.members[event.node_id]
            return _with_member(state, replace(m, active=False, removals=m.removals + 1))
        case NodeBanned():
            return _with_member(state, replace(cl.members[event.node_id], banned=True))
        case NodeUnbanned():
            m = cl.members[event.node_id]
            return _with_member(state, replace(m, banned=False, unbans=m.unbans + 1))
        case ReputationChanged():
            m = cl.members[event.node_id]
            streak = {ReputationReason.SILENT_FAILURE: m.silent_streak + 1, ReputationReason.PARTICIPATION: 0,
                      ReputationReason.SILENCE_WITHDRAWN: 0, ReputationReason.UNBANNED: 0}.get(event.reason,
                                                                                                m.silent_streak)
            return _with_member(state, replace(m, reputation=event.score, silent_streak=streak))
        case RetentionApplied():
            return replace(state, cluster=replace(cl, retention_seq=cl.retention_seq + 1))
        case WriterAdmitted():
            old_w = cl.writers.get(event.writer)
            w = Writer(event.writer, WriterRole(event.role), bytes.fromhex(event.public_key),
                       admissions=(old_w.admissions + 1) if old_w else 1, revocations=old_w.revocations if old_w else 0)
            return replace(state, cluster=replace(cl, writers={**cl.writers, w.writer: w}))
        case WriterRevoked():
            w = cl.writers[event.writer]
            w = replace(w, active=False, revocations=w.revocations + 1)
            return replace(state, cluster=replace(cl, writers={**cl.writers, w.writer: w}))
        case InvalidEntryReported():
            faults = {p: f for p, f in cl.faults.items() if p != event.position}
            return replace(state, cluster=replace(cl, faults=faults))
        case TransactionOpened():
            expected = frozenset(n for n, m in cl.members.items() if m.eligible)
            return replace(state, tx=Tx(event.tx_id, COLLECTING, event.opened_at_ms, event.deadline_at_ms,
                                        expected=expected))
        case ViolationDetected() if tx is None:
            return state  # a forged vote's violation for a tx nobody opened (R7)
        case (VoteAccepted() | ThresholdReached() | TransactionAborted() | DeadlinePassed() | SilenceWithdrawn()
              | TransactionExpired()
              | SubmissionStarted() | SubmissionSigned() | SubmissionBroadcast() | SubmissionConfirmed()
              | SubmissionFailed()) if tx is None:
            return state  # the decider never writes these before TransactionOpened: a forged row changes nothing
        case VoteAccepted():
            tx = replace(tx, votes={**tx.votes, event.node_id: event})
        case ViolationDetected():
            tx = replace(tx, flagged=tx.flagged | {(event.kind, event.node_id)})
        case ThresholdReached():
            tx = replace(tx, status=THRESHOLD_REACHED, value=event.value)
        case TransactionAborted():
            tx = replace(tx, status=AbortReason(event.reason).status)
        case DeadlinePassed():
            tx = replace(tx, deadline_fired=True)
        case SilenceWithdrawn():
            tx = replace(tx, flagged=tx.flagged - {(SILENT_FAILURE, event.node_id)})
        case TransactionExpired():
            tx = replace(tx, status=EXPIRED)
        case SubmissionStarted():
            tx = replace(tx, status=SUBMITTING, lock_revision=event.lock_revision)
        case SubmissionSigned():
            tx = replace(tx, signed=(*tx.signed, event.tx_hash),
                         nonce=tx.nonce or (event.chain_id, event.sender, event.nonce))
        case SubmissionBroadcast():
            pass  # the broadcast changes nothing the decider reads (R11 keeps the signed hashes)
        case SubmissionConfirmed():
            tx = replace(tx, status=CONFIRMED)
        case SubmissionFailed():
            tx = replace(tx, failures=tx.failures + 1)
        case _:
            raise errors.UnknownEvent(event)
    return State(state.cluster, tx)


def _with_member(state: State, m: Member) -> State:
    return replace(state, cluster=replace(state.cluster, members={**state.cluster.members, m.node_id: m}))


def fold(events: list[Event], state: State | None = None) -> State:
    s = state or State()
    for e in events:
        s = evolve(s, e)
    return s


class Ledger:
    """The whole cluster's decision state: the cluster and every transaction, kept by a shell.

    Mutable by design (it is the shell's cache), but every change goes through ``evolve``.
    """

    def __init__(self) -> None:
        self.cluster = Cluster()
        self.txs: dict[str, Tx] = {}

    def view(self, tx_id: str | None) -> State:
        if tx_id is not None:
            check_tx_id(tx_id)  # before it is used as a key: bad input is an InvalidCommand
        return State(self.cluster, self.txs.get(tx_id) if tx_id is not None else None)

    def apply(self, event: Event) -> None:
        tx_id = getattr(event, "tx_id", None)
        s = evolve(self.view(tx_id), event)
        self.cluster = s.cluster
        if s.tx is not None:
            self.txs[s.tx.tx_id] = s.tx

    def decide(self, command: Command) -> list[Event]:
        return decide(self.view(getattr(command, "tx_id", None)), command)

    def execute(self, command: Command) -> list[Event]:
        """Decide and adopt the decision's own evolved state (no second fold of its events).

        Without the fast-path effects: a follower deciding another writer's unit again needs only its
        events, and counting every claim's votes was ~3 % of a loaded node's CPU (issue 15)."""
        return self._adopt(command).events

    def step(self, command: Command) -> Decision:
        """``execute``, with the decision's fast-path effects (what the recorder claims in etcd)."""
        d = self._adopt(command)
        return Decision(d.events, d.effects())

    def _adopt(self, command: Command) -> _Decision:
        d = _run(self.view(getattr(command, "tx_id", None)), command)
        self.cluster = d.state.cluster
        if d.state.tx is not None:
            self.txs[d.state.tx.tx_id] = d.state.tx
        return d
