"""``audit verify``: check the log from the log alone (R13).

Two layers:

1. Integrity: positions run 1..n without a gap, each row's ``prev_hash`` is the previous
   row's hash, each hash is BLAKE3 over the row as stored, every row is covered by its
   writer's signature, and every decision is what the rules produce from the log before it
   (``events.follow``). Every row that fails is named, with its reason: an edit, a deletion,
   an insertion made behind the service's back, or a writer's false entry.
2. Evidence: every accepted vote's signature verifies under the member's key as admitted
   in the log; a double vote shows two verifying votes with different values; a minority
   vote shows a verifying dissent; an invalid-signature violation shows a vote that does
   *not* verify under the claimed member's key, inside a gossip envelope its author signed
   (R7); every consensus certificate hash is recomputed from the accepted votes it names. A
   node that writes a false event is caught.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from events import model as m
from events.envelope import Envelope, authored
from events.errors import UnknownEvent
from events.follow import Follower
from events.identity import peer_id_bytes
from events.model import tx_stream
from events.store import GENESIS, EventStore, Recorded
from events.vocab import ViolationKind
from events.vote import SignedVote, certificate_hash


@dataclass
class Finding:
    position: int
    problem: str


@dataclass
class AuditReport:
    events: int = 0
    last_hash: str = GENESIS.hex()
    integrity: list[Finding] = field(default_factory=list)
    evidence: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.integrity and not self.evidence

    @property
    def first_problem(self) -> Finding | None:
        found = self.integrity + self.evidence
        return min(found, key=lambda f: f.position) if found else None


def verify(store: EventStore) -> AuditReport:
    """Every bad row of the log, each with its position and reason (not only the first).

    The log is read as an honest follower reads it (``events.follow``: chain, writer signatures,
    entitlement, every decision re-derived, nothing taken on trust, not even a row of our own), then
    every applied event's evidence is checked again on its own.
    """
    report = AuditReport()
    follower = Follower(trust_own=False, retain_final=10_000,  # memory bounded on a long log
                        loader=lambda tx_id: store.read_stream(tx_stream(tx_id)))
    keys: dict[str, bytes] = {}  # node_id -> vote key, as admitted in the log
    votes: dict[tuple[str, str], SignedVote] = {}  # (tx, node) -> accepted vote
    for rows in _pages(store):
        report.events += len(rows)
        for s in follower.feed(rows):
            if s.void is not None:
                v = s.void
                kind = report.evidence if v.attributable else report.integrity
                kind.append(Finding(v.position, f"void, written as {v.writer!r}: {v.reason}"))
                continue
            try:
                _check_evidence(s.row, keys, votes, report)
            except Exception as e:  # malformed payloads are findings, not crashes
                report.evidence.append(Finding(s.row.position, f"unreadable {s.row.event_type}: {e}"))
    report.integrity += [Finding(a.position, a.problem) for a in follower.anomalies]
    if follower.waiting:
        report.integrity.append(Finding(follower.position + 1, f"{follower.waiting} row(s) at the end of the log "
                                                               "that no writer signature covers"))
    report.integrity.sort(key=lambda f: f.position)
    report.evidence.sort(key=lambda f: f.position)
    report.last_hash = follower.prev_hash.hex()
    return report


def _pages(store: EventStore, batch: int = 5000) -> Iterator[list[Recorded]]:
    after = 0
    while True:
        rows = store.read_all(after=after, limit=batch)
        if rows:
            yield rows
        if len(rows) < batch:
            return
        after = rows[-1].position


def _verifies(vote_json: dict, keys: dict[str, bytes]) -> tuple[SignedVote, bool]:
    sv = SignedVote.from_json(vote_json)
    key = keys.get(sv.vote.node_id)
    return sv, key is not None and sv.verifies_under(key)


def _check_evidence(r: Recorded, keys: dict[str, bytes], votes: dict, report: AuditReport) -> None:
    e = r.event()
    bad = report.evidence.append
    match e:
        case m.MemberAdmitted():
            keys[e.node_id] = bytes.fromhex(e.vote_key)
        case m.VoteAccepted():
            sv, ok = _verifies(e.vote, keys)
            if not ok or (sv.vote.tx_id, sv.vote.node_id, sv.vote.value) != (e.tx_id, e.node_id, e.value):
                bad(Finding(r.position, f"accepted vote of {e.node_id} on {e.tx_id} does not verify"))
            votes[(e.tx_id, e.node_id)] = sv
        case m.ViolationDetected(kind=ViolationKind.DOUBLE_VOTING):
            (a, ok_a), (b, ok_b) = _verifies(e.evidence["first"], keys), _verifies(e.evidence["second"], keys)
            if not (ok_a and ok_b and a.vote.value != b.vote.value and a.vote.node_id == b.vote.node_id == e.node_id):
                bad(Finding(r.position, f"double-vote evidence against {e.node_id} does not hold"))
        case m.ViolationDetected(kind=ViolationKind.MINORITY_VOTE):
            sv, ok = _verifies(e.evidence["vote"], keys)
            if not ok or sv.vote.value == e.evidence["majority_value"] or sv.vote.node_id != e.node_id:
                bad(Finding(r.position, f"minority evidence against {e.node_id} does not hold"))
        case m.ViolationDetected(kind=ViolationKind.INVALID_SIGNATURE):
            sv, ok = _verifies(e.evidence["vote"], keys)
            if ok:
                bad(Finding(r.position, f"{e.node_id} blamed for a signature that verifies"))
            author_key = keys.get(e.node_id)
            why = "the author is not a member" if author_key is None else authored(
                Envelope.from_json(e.evidence.get("envelope")), author_key, peer_id_bytes(author_key),
                e.evidence["vote"])
            if why:  # R7: only the author's own signed envelope proves it sent the forgery
                bad(Finding(r.position, f"{e.node_id} blamed for a forgery without proof: {why}"))
        case m.ThresholdReached():
            try:
                cert = certificate_hash([votes[(e.tx_id, n)] for n in e.voters])
            except KeyError as missing:
                bad(Finding(r.position, f"consensus on {e.tx_id} names a vote not in the log: {missing}"))
                return
            if cert != e.certificate_hash or any(votes[(e.tx_id, n)].vote.value != e.value for n in e.voters):
                bad(Finding(r.position, f"consensus certificate of {e.tx_id} does not match its votes"))
        case m.SilenceWithdrawn():
            sv, ok = _verifies(e.vote, keys)
            if not ok or sv.vote.node_id != e.node_id or sv.vote.tx_id != e.tx_id \
                    or sv.vote.timestamp_ms > e.deadline_at_ms:
                bad(Finding(r.position, f"silence of {e.node_id} on {e.tx_id} withdrawn without an on-time vote"))
        case m.ViolationDetected(kind=ViolationKind.SILENT_FAILURE):
            pass  # silence has no signed evidence: the deadline event beside it is the record
        case m.ViolationDetected():
            bad(Finding(r.position, f"violation of unknown kind {e.kind!r}"))
        case (m.ClusterConfigured() | m.MemberRemoved() | m.NodeBanned() | m.NodeUnbanned() | m.ReputationChanged()
              | m.RetentionApplied() | m.TransactionOpened() | m.TransactionAborted() | m.DeadlinePassed()
              | m.TransactionExpired() | m.SubmissionStarted() | m.SubmissionSigned() | m.SubmissionBroadcast()
              | m.SubmissionConfirmed() | m.SubmissionFailed() | m.WriterAdmitted() | m.WriterRevoked()
              | m.InvalidEntryReported()):
            pass  # no signature to check in them
        case _:
            raise UnknownEvent(e)
