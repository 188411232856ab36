"""The metrics projection: log events folded into Prometheus counters and gauges.

A projection like the SQL tables (``projections.projector``), kept in memory: the one place where an
event type maps to a metric. The live projector feeds it each event once, after each committed batch
(it sees every event exactly once, whoever appended it), so run it in one process only or totals
double. The metric objects themselves are defined in ``observability.metrics``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge

from events import model as m
from events.errors import UnknownEvent
from events.vocab import BYZANTINE_KINDS, AbortReason, TxStatus, ViolationKind
from observability.metrics import METRICS, Metrics


class _Recordedish(Protocol):
    position: int
    recorded_at_us: int

    def event(self) -> m.Event: ...


@dataclass
class _MemberView:
    peer_id: str
    active: bool = True
    banned: bool = False
    reputation: float = 1.0


class EventMetrics:
    """Folds log events into the metrics: the one place where an event type maps to a metric.

    Counters count what it is fed; gauges reflect a small state kept here (open transactions,
    members, t). A process that starts mid-log (the projector after a restart) calls
    :meth:`prime_from_db` or :meth:`prime` first so gauges start right without re-counting.
    """

    MAX_PENDING_SUBMISSIONS = 100_000  # start times kept for latency; oldest dropped beyond this

    def __init__(self, metrics: Metrics = METRICS, projector: str = "main") -> None:
        self.m = metrics
        self.projector = projector
        self.open: set[str] = set()
        self.members: dict[str, _MemberView] = {}
        self.threshold = 0
        self.floor = 0.0
        self.started_at: OrderedDict[str, float] = OrderedDict()  # tx_id -> SubmissionStarted time (s)
        self.lock = threading.Lock()

    def observe(self, items: Iterable[m.Event | _Recordedish]) -> None:
        """Count new events (each event must be fed once, in log order) and refresh the gauges."""
        with self.lock:
            for item in items:
                self._fold(item, count=True)
            self._set_gauges()

    def void(self, voids: Iterable[Any]) -> None:
        """Count void rows (``events.follow.Void``); a forged row's writer name is not trusted as a label."""
        for v in voids:
            self.m.log_rows_void.labels(v.writer if v.attributable else "unknown",
                                        "yes" if v.attributable else "no").inc()

    def prime(self, items: Iterable[m.Event | _Recordedish]) -> None:
        """Rebuild the gauge state from past events without counting them."""
        with self.lock:
            for item in items:
                self._fold(item, count=False)
            self._set_gauges()

    def prime_from_db(self, conn: Any, upto: int) -> None:
        """Rebuild the gauge state from the projections at position ``upto`` (psycopg connection).

        Reads ``members``, ``node_reputation``, open ``tx_state`` rows and the last
        ``ClusterConfigured`` event at or before ``upto``; call it in the projector's transaction
        (or right after catching up) so tables and position agree.
        """
        rep = dict(conn.execute("SELECT peer_id, reputation_score FROM node_reputation").fetchall())
        members = conn.execute("SELECT node_id, peer_id, active, banned FROM members").fetchall()
        open_txs = conn.execute("SELECT tx_id FROM tx_state WHERE status = %s", (TxStatus.COLLECTING,)).fetchall()
        cfg = conn.execute(
            "SELECT payload FROM events WHERE event_type = 'ClusterConfigured' AND position <= %s "
            "ORDER BY position DESC LIMIT 1", (upto,)).fetchone()
        with self.lock:
            self.members = {n: _MemberView(p, a, b, float(rep.get(p, 1.0))) for n, p, a, b in members}
            self.open = {t for (t,) in open_txs}
            self.threshold = int(cfg[0]["threshold"]) if cfg else 0
            self.floor = int(cfg[0]["reputation_floor"]) / 1000 if cfg else 0.0
            self.m.projector_position.labels(self.projector).set(upto)
            self._set_gauges()

    def _fold(self, item: m.Event | _Recordedish, count: bool) -> None:
        if isinstance(item, m.Event):
            e, at, position = item, time.time(), None
        else:
            e, at, position = item.event(), item.recorded_at_us / 1e6, item.position
        mt = self.m
        if count:
            mt.events_projected.labels(e.TYPE).inc()
        match e:
            case m.ClusterConfigured():
                self.threshold = e.threshold
                self.floor = e.reputation_floor / 1000
            case m.MemberAdmitted():
                self.members[e.node_id] = _MemberView(e.peer_id)
                # Series exist at 0 from admission, so rate()/increase() see a member's first violation.
                mt.votes_received.labels(e.node_id)
                mt.silent_failures.labels(e.node_id)
                for kind in sorted(BYZANTINE_KINDS):
                    mt.votes_rejected_byzantine.labels(e.node_id, kind)
            case m.MemberRemoved():
                if v := self.members.get(e.node_id):
                    v.active = False
            case m.NodeBanned():
                if v := self.members.get(e.node_id):
                    v.banned = True
                if count:
                    mt.node_bans.labels(e.node_id, e.reason).inc()
            case m.NodeUnbanned():
                if v := self.members.get(e.node_id):
                    v.banned = False
            case m.ReputationChanged():
                if v := self.members.get(e.node_id):
                    v.reputation = e.score / 1000
            case m.TransactionOpened():
                self.open.add(e.tx_id)
                if count:
                    mt.transactions_opened.inc()
            case m.VoteAccepted():
                if count:
                    mt.votes_received.labels(e.node_id).inc()
            case m.ViolationDetected():
                if count and e.kind in BYZANTINE_KINDS:
                    mt.votes_rejected_byzantine.labels(e.node_id, e.kind).inc()
                elif count and e.kind == ViolationKind.SILENT_FAILURE:
                    mt.silent_failures.labels(e.node_id).inc()
            case m.ThresholdReached():
                self.open.discard(e.tx_id)
                if count:
                    mt.threshold_reached.inc()
            case m.TransactionAborted():
                self.open.discard(e.tx_id)
                self.started_at.pop(e.tx_id, None)
                if count:
                    mt.transactions_closed.labels(AbortReason(e.reason).status).inc()
                    if e.reason == AbortReason.BYZANTINE:
                        mt.transactions_aborted_byzantine.inc()
            case m.TransactionExpired():
                self.open.discard(e.tx_id)
                if count:
                    mt.transactions_closed.labels(TxStatus.EXPIRED).inc()
            case m.SubmissionStarted():
                self.started_at.setdefault(e.tx_id, at)
                while len(self.started_at) > self.MAX_PENDING_SUBMISSIONS:
                    self.started_at.popitem(last=False)
            case m.SubmissionFailed():
                if count:
                    mt.blockchain_submissions.labels("failed").inc()
            case m.SubmissionConfirmed():
                started = self.started_at.pop(e.tx_id, None)
                if count:
                    mt.blockchain_submissions.labels("confirmed").inc()
                    mt.transactions_closed.labels(TxStatus.CONFIRMED).inc()
                    if started is not None:
                        mt.submission_latency.observe(max(0.0, at - started))
            case m.SilenceWithdrawn():
                if count:
                    mt.silences_withdrawn.labels(e.node_id).inc()
            case (m.DeadlinePassed() | m.SubmissionSigned() | m.SubmissionBroadcast() | m.RetentionApplied()
                  | m.WriterAdmitted() | m.WriterRevoked() | m.InvalidEntryReported()):
                pass  # counted only in events_projected_total
            case _:
                raise UnknownEvent(e)
        if position is not None:
            mt.projector_position.labels(self.projector).set(position)

    def _set_gauges(self) -> None:
        mt = self.m
        mt.active_votes.set(len(self.open))
        mt.banned_peers.set(sum(1 for v in self.members.values() if v.banned))
        eligible = sum(1 for v in self.members.values() if v.active and not v.banned)
        mt.eligible_members.set(eligible)
        mt.cluster_threshold.set(self.threshold)
        mt.reputation_floor.set(self.floor)
        mt.quorum_possible.set(1 if self.threshold and eligible >= self.threshold else 0)
        current = {(n, v.peer_id) for n, v in self.members.items() if v.active}
        for labels in _label_sets(mt.peer_reputation):
            if labels not in current:
                mt.peer_reputation.remove(*labels)  # a removed member leaves the reputation table
        for n, v in self.members.items():
            if v.active:
                mt.peer_reputation.labels(n, v.peer_id).set(v.reputation)


def _label_sets(metric: Gauge) -> list[tuple[str, ...]]:
    return [tuple(s.labels[k] for k in ("node_id", "peer_id"))
            for fam in metric.collect() for s in fam.samples]


def metrics_from_events(events: Iterable[m.Event | _Recordedish]) -> Metrics:
    """Feed a sequence of events to a fresh registry and return its metrics (tests, `replay`)."""
    metrics = Metrics(CollectorRegistry())
    EventMetrics(metrics).observe(events)
    return metrics
