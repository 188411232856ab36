"""The protocol's names are defined once (events/vocab.py) and every fold of the log knows every event.

Fails when a new event type is added to ``events.model`` without a case in each of the five folds
(the decider's ``evolve``, the projector, the metrics projection, the submitter's index, the audit),
when a fold ignores an unknown type instead of raising ``UnknownEvent``, or when a status or
violation kind is missing from the audit, the metrics or the TLA+ model. The projection schema's
CHECK constraints are checked against the vocabulary in tests/integration/test_vocabulary_schema.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from helpers import run
from obs_scenario import recorded, scenario
from prometheus_client import CollectorRegistry

from events import audit, rules
from events import model as m
from events.errors import UnknownEvent
from events.vocab import BYZANTINE_KINDS, FINAL, AbortReason, TxStatus, ViolationKind
from observability.metrics import Metrics
from projections import projector
from projections.metrics import EventMetrics
from submitter.index import LogIndex

TLA = Path(__file__).resolve().parents[2] / "tla" / "ThresholdVote.tla"


def every_event_type() -> list[m.Event]:
    """A log that holds every event type at least once, each one as the decider wrote it."""
    events, ts = scenario()
    ledger = rules.Ledger()
    for e in events:
        ledger.apply(e)
    n1, _n2, n3, n4 = ts
    extra = [
        *run(ledger, rules.Unban(n1.node_id, "op", "lifted")),  # eligible: n1, n3, n4
        *run(ledger, rules.RemoveMember(n4.node_id, "op", "retired", new_threshold=2)),
        *run(ledger, rules.ApplyRetention(10**12, "op")),
        *run(ledger, n1.receive("tx5", 1)),
        *run(ledger, n3.receive("tx5", 2)),  # no value can reach t=2: ABORTED_NO_QUORUM
        *run(ledger, n1.receive("tx6", 1)),
        *run(ledger, n3.receive("tx6", 1)),
        *run(ledger, rules.StartSubmission("tx6", "sub-1", 9)),
        *run(ledger, rules.RecordFailed("tx6", 9, "rpc down", True)),
        *run(ledger, rules.AdmitMember(n4.node_id, n4.vote_key, n4.peer_id, "op")),  # back: n1, n3, n4
        *run(ledger, n1.receive("tx7", 1)),
        *run(ledger, n3.receive("tx7", 1)),
        *run(ledger, rules.CheckDeadline("tx7", 10**12)),  # n4 silent...
        *run(ledger, n4.receive("tx7", 1, now=10**12 + 1)),  # ...but its vote was signed in time (R9)
        *run(ledger, rules.AdmitWriter("submitter:sub-2", "submitter", bytes(range(32)), "op")),
        *run(ledger, rules.RevokeWriter("submitter:sub-2", "op", "retired")),
    ]
    # R13: a signed entry every follower found invalid (the follower's check puts it in the state)
    ledger.cluster = replace(ledger.cluster, faults={99: rules.Fault(n3.node_id, "decides otherwise")})
    extra += run(ledger, rules.ReportInvalidEntry(99, n3.node_id, "decides otherwise"))
    return events + extra


@dataclass(frozen=True)
class Unheard(m.Event):
    TYPE = "Unheard"
    tx_id: str = "tx1"

    @property
    def key(self) -> str:
        return "unheard"


def folds():
    """Each fold as a function of (rows so far, one row); raises what the fold raises."""

    ledger = rules.Ledger()
    tables = projector.Tables()
    metrics = EventMetrics(Metrics(CollectorRegistry()))
    index = LogIndex()
    report, keys, votes = audit.AuditReport(), {}, {}

    def decider(r):
        ledger.apply(r.event())

    def submitter(r):
        index.on_event(r.event(), ledger)

    def audited(r):
        audit._check_evidence(r, keys, votes, report)

    return {
        "rules.evolve": decider,
        "projector.apply": lambda r: projector._apply(tables, r),
        "metrics projection": lambda r: metrics.observe([r]),
        "submitter index": submitter,
        "audit": audited,
    }


def test_the_sample_log_holds_every_event_type():
    assert {e.TYPE for e in every_event_type()} == set(m.EVENT_TYPES)


@pytest.mark.parametrize("fold", sorted(folds()))
def test_every_fold_has_a_case_for_every_event_type(fold):
    apply = folds()[fold]
    for r in recorded(every_event_type()):
        try:
            apply(r)
        except UnknownEvent as e:  # pragma: no cover - the failure this test exists for
            pytest.fail(f"{fold} has no case for {r.event().TYPE}: {e}")


@pytest.mark.parametrize("fold", sorted(folds()))
def test_every_fold_refuses_an_event_type_it_does_not_know(fold):
    apply = folds()[fold]
    rows = recorded(every_event_type()[:12])  # members, config, a transaction opened
    for r in rows:
        apply(r)
    rec = recorded([*every_event_type()[:12], Unheard()])[-1]
    with pytest.raises(UnknownEvent):
        apply(rec)


def test_statuses_and_kinds_are_one_vocabulary():
    assert rules.FINAL == FINAL and set(TxStatus) > FINAL
    assert {r.status for r in AbortReason} == {TxStatus.ABORTED_BYZANTINE, TxStatus.ABORTED_NO_QUORUM}
    assert set(ViolationKind) - {ViolationKind.SILENT_FAILURE} == BYZANTINE_KINDS


def test_the_metrics_know_every_final_status_and_kind():
    mt = Metrics(CollectorRegistry())
    EventMetrics(mt).observe(recorded(every_event_type()))
    closed = {s.labels["status"] for f in mt.transactions_closed.collect() for s in f.samples}
    assert set(FINAL) <= closed
    kinds = {s.labels["kind"] for f in mt.votes_rejected_byzantine.collect() for s in f.samples}
    assert set(BYZANTINE_KINDS) <= kinds


def test_the_audit_knows_every_violation_kind():
    for kind in ViolationKind:
        src = Path(audit.__file__).read_text()
        assert f"ViolationKind.{kind.name}" in src, f"audit.py has no case for {kind}"


def test_the_tla_model_names_every_status_and_kind():
    text = TLA.read_text()
    for name in [*TxStatus, *ViolationKind]:
        assert f'"{name.value}"' in text, f"tla/ThresholdVote.tla does not name {name}"
