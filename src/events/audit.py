"""``audit verify``: check the log from the log alone (R13).

Two layers:

1. Integrity: positions run 1..n without a gap, each row's ``prev_hash`` is the previous
   row's hash, and each hash is BLAKE3 over the row as stored. The first row that fails
   is named: an edit, a deletion or an insertion made behind the trigger's back.
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
from events.identity import peer_id_bytes
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


def _rows(store: EventStore, batch: int = 5000) -> Iterator[Recorded]:
    after = 0
    while True:
        rows = store.read_all(after=after, limit=batch)
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].position


def verify(store: EventStore) -> AuditReport:
    report = AuditReport()
    prev_hash, expected_pos = GENESIS, 1
    keys: dict[str, bytes] = {}  # node_id -> vote key, as admitted in the log
    votes: dict[tuple[str, str], SignedVote] = {}  # (tx, node) -> accepted vote
    for r in _rows(store):
        report.events += 1
        if r.position != expected_pos:
            report.integrity.append(Finding(expected_pos, f"missing event(s): next stored is {r.position}"))
        elif r.prev_hash != prev_hash:
            report.integrity.append(Finding(r.position, "prev_hash does not chain to the previous event"))
        elif r.content_hash() != r.hash:
            report.integrity.append(Finding(r.position, "content does not match its hash (edited)"))
        if report.integrity:
            return report  # past the first break the chain proves nothing
        prev_hash, expected_pos = r.hash, r.position + 1
        report.last_hash = r.hash.hex()
        try:
            _check_evidence(r, keys, votes, report)
        except Exception as e:  # malformed payloads are findings, not crashes
            report.evidence.append(Finding(r.position, f"unreadable {r.event_type}: {e}"))
    return report


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
        case m.ViolationDetected(kind=ViolationKind.SILENT_FAILURE):
            pass  # silence has no signed evidence: the deadline event beside it is the record
        case m.ViolationDetected():
            bad(Finding(r.position, f"violation of unknown kind {e.kind!r}"))
        case (m.ClusterConfigured() | m.MemberRemoved() | m.NodeBanned() | m.NodeUnbanned() | m.ReputationChanged()
              | m.RetentionApplied() | m.TransactionOpened() | m.TransactionAborted() | m.DeadlinePassed()
              | m.TransactionExpired() | m.SubmissionStarted() | m.SubmissionSigned() | m.SubmissionBroadcast()
              | m.SubmissionConfirmed() | m.SubmissionFailed()):
            pass  # no signature to check in them
        case _:
            raise UnknownEvent(e)
