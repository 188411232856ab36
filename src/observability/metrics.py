"""Every Prometheus metric of the service, defined once, and the one mapping from log events to them.

Names follow seed section 13.1; the dashboard and the alert rules (``monitoring/``) refer to
these names and a test checks they exist here.

Label conventions (bounded cardinality: N members, a handful of reasons):

* ``node_id`` / ``peer_id``: the *member a fact is about* (the voter, the blamed or banned member).
  Never a name taken from unauthenticated input: outsiders are counted by ``reason`` only.
* ``node``: the process instance reporting (a recorder's writer id, a gossip host's node id),
  so one process running several nodes (``tvote up``) still tells them apart.

Who updates what:

* ``projections.metrics.EventMetrics`` (business counters and cluster gauges) is a projection of
  the *log*, fed each event once: the projector calls ``observe`` after each committed batch (it
  sees every event exactly once, whoever appended it: nodes, the submitter, operator commands).
  Run it in one process only, or totals double.
* Recorders call :func:`observe_results` (append outcomes, votes dropped at the edge),
  ``etcd_timer`` around etcd calls and :func:`store_error` on outages.
* Gossip hosts register their counters with :func:`register_gossip` (read at scrape time).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from events import errors
from events.vocab import FINAL

# The seed's names (section 13.1). Tests assert each is exposed.
SEED_METRICS = (
    "votes_received_total",
    "votes_rejected_byzantine_total",
    "threshold_reached_total",
    "transactions_aborted_byzantine_total",
    "blockchain_submissions_total",
    "submission_latency_seconds",
    "active_votes",
    "peer_reputation",
    "etcd_operation_duration_seconds",
    "gossipsub_messages_total",
    "banned_peers_total",
)

METRICS_PORT_VAR = "TVOTE_METRICS_PORT"
METRICS_HOST_VAR = "TVOTE_METRICS_HOST"
OUTCOMES = ("appended", "duplicate", "rejected", "deferred")  # recording.recorder.Status values
# A vote rejected by the rules never reaches the log; R1/R10 say "dropped, counted".
DROP_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (errors.OutsiderVote, "outsider"),
    (errors.BannedSender, "banned"),
    (errors.InvalidCommand, "invalid"),  # includes InvalidVote
    (errors.NotConfigured, "not_configured"),
    (errors.CommandRejected, "rejected"),
)
# GossipCounters field -> (direction, outcome) for gossipsub_messages_total.
GOSSIP_FIELDS = {
    "published": ("out", "published"),
    "publish_rejected": ("out", "dropped_queue_full"),
    "own_publish_drops": ("out", "dropped_own"),
    "forward_drops": ("out", "dropped_forward"),
    "spam_limited": ("out", "spam_limited"),
    "duplicate_payloads": ("out", "duplicate"),
    "delivered": ("in", "delivered"),
    "delivery_drops": ("in", "dropped_delivery"),
    "validated": ("in", "validated"),
    "rejected_invalid": ("in", "rejected_invalid"),
    "rejected_oversize": ("in", "rejected_oversize"),
    "rejected_rate": ("in", "rejected_rate"),
    "rejected_banned": ("in", "rejected_banned"),
    "validator_errors": ("in", "rejected_error"),
    "wrong_topic": ("in", "wrong_topic"),
}
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
RECEPTION_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ETCD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _GossipCollector(Collector):
    """Exposes each registered host's GossipCounters at scrape time (the host owns the numbers)."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], dict[str, int]]] = {}
        self.lock = threading.Lock()

    def collect(self) -> Iterator[CounterMetricFamily]:
        fam = CounterMetricFamily(
            "gossipsub_messages",
            "GossipSub messages by direction and outcome, per host: spot a node that stops publishing, "
            "or peers sending invalid/banned/rate-limited traffic (flood defence at work).",
            labels=["node", "direction", "outcome"],
        )
        with self.lock:
            sources = list(self.sources.items())
        for node, snapshot in sources:
            try:
                snap = snapshot()
            except Exception:  # a host being torn down must not break the scrape
                continue
            for name, (direction, outcome) in GOSSIP_FIELDS.items():
                if name in snap:
                    fam.add_metric([node, direction, outcome], float(snap[name]))
        yield fam


@dataclass
class Metrics:
    """The metric objects, bound to one registry (a fresh one per test; ``REGISTRY`` in processes)."""

    registry: CollectorRegistry
    gossip: _GossipCollector = field(init=False)
    nodes_seen: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        r = self.registry
        # --- votes and transactions (from the log, via EventMetrics) ---------------------------
        self.votes_received = Counter(
            "votes_received_total",
            "Votes recorded in the log (VoteAccepted), by voter: a member whose rate stalls is silent or "
            "partitioned; the cluster rate is the throughput the partition alert watches.",
            ["node_id"], registry=r)
        self.votes_rejected_byzantine = Counter(
            "votes_rejected_byzantine_total",
            "Byzantine votes detected (double, minority, forged signature), by blamed member and kind: "
            "each one bans its member and may abort a transaction.",
            ["node_id", "kind"], registry=r)
        self.silent_failures = Counter(
            "silent_failures_total",
            "Eligible members that did not vote before a deadline (R9): costs reputation, not a ban by itself.",
            ["node_id"], registry=r)
        self.silences_withdrawn = Counter(
            "silences_withdrawn_total",
            "Silent failures withdrawn (R9): the member's vote, signed before the deadline, reached the log late "
            "(an outage or a partition on its side); its reputation is given back.",
            ["node_id"], registry=r)
        self.transactions_opened = Counter(
            "transactions_opened_total", "Transactions opened by their first accepted vote.", registry=r)
        self.threshold_reached = Counter(
            "threshold_reached_total", "Transactions that reached t identical votes with no dissent (R6).",
            registry=r)
        self.transactions_aborted_byzantine = Counter(
            "transactions_aborted_byzantine_total",
            "Transactions aborted because of a Byzantine vote (ABORTED_BYZANTINE): each one is a value "
            "that will not be written; page someone.", registry=r)
        self.transactions_closed = Counter(
            "transactions_closed_total",
            "Transactions reaching a final state, by status: the mix shows whether votes turn into writes.",
            ["status"], registry=r)
        self.blockchain_submissions = Counter(
            "blockchain_submissions_total",
            "Chain submissions by result: confirmed (the value is on chain, exactly once) or failed attempts.",
            ["result"], registry=r)
        self.submission_latency = Histogram(
            "submission_latency_seconds",
            "Time from claiming a submission (SubmissionStarted) to its confirmation on chain, from the "
            "log's timestamps: slow RPC, gas or lock contention shows here.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.node_bans = Counter(
            "node_bans_total", "Bans recorded in the log, by member and reason (a violation kind or "
            "REPUTATION_FLOOR).", ["node_id", "reason"], registry=r)
        self.active_votes = Gauge(
            "active_votes", "Transactions still collecting votes: a growing backlog means votes are not "
            "arriving or not reaching t.", registry=r)
        self.peer_reputation = Gauge(
            "peer_reputation", "Reputation of each current member, 0..1: silence lowers it, a Byzantine "
            "ban sets it to 0; below the floor the member is banned.", ["node_id", "peer_id"], registry=r)
        self.banned_peers = Gauge(
            "banned_peers_total", "Members currently banned (R10): they no longer count toward t.", registry=r)
        self.eligible_members = Gauge(
            "eligible_members", "Members that are active and not banned: the voters that can still reach t.",
            registry=r)
        self.cluster_threshold = Gauge(
            "cluster_threshold", "The configured threshold t (0 until the cluster is configured).", registry=r)
        self.reputation_floor = Gauge(
            "reputation_floor", "The configured reputation floor, 0..1 (R9): a member below it has been silent on "
            "consensus transactions lately; it is banned for it only if the operator opted in.", registry=r)
        self.quorum_possible = Gauge(
            "quorum_possible", "1 while at least t members are eligible; 0 means no transaction can succeed "
            "(R10) until an operator unbans, admits members or lowers t.", registry=r)
        self.projector_position = Gauge(
            "projector_position", "Last log position folded into the SQL projections: compare with the "
            "log head to see projection lag; flat while votes arrive means the projector is stuck.",
            ["projector"], registry=r)
        self.log_rows_void = Counter(
            "log_rows_void_total",
            "Log rows every honest follower ignores (R13), by writer: a row no valid writer signature covers "
            "(an INSERT behind the service's back: writer 'unknown'), edited after it was written, or a "
            "decision the rules do not produce (that writer's own doing). Any increase is an incident.",
            ["writer", "attributable"], registry=r)
        self.events_projected = Counter(
            "events_projected_total", "Log events seen by the metrics observer, by type.", ["event_type"],
            registry=r)
        # --- the write path of each node (process-local) --------------------------------------
        self.log_appends = Counter(
            "log_appends_total",
            "Recorder command outcomes: appended, duplicate (R3/retry), rejected, deferred (claimed by a "
            "live peer); many conflicts or deferrals mean writers are contending.",
            ["node", "outcome"], registry=r)
        self.votes_dropped = Counter(
            "votes_dropped_total",
            "Votes dropped at the edge by the rules, never logged: outsider (R1), banned sender (R10), "
            "invalid input; a burst of outsiders or banned senders is an attack or a misconfiguration.",
            ["node", "reason"], registry=r)
        self.signer_refusals = Counter(
            "signer_refusals_total",
            "Ballots this trustee refused to sign (R14), by reason: conflict (a client asked for another value "
            "than the one already signed: a client bug or an attack), or the signer could not sign safely "
            "(instance claim lapsed, journal failure).", ["node", "reason"], registry=r)
        self.store_errors = Counter(
            "store_errors_total", "Failed calls to Postgres or etcd (StoreUnavailable): appends pause "
            "while these grow.", ["node", "store"], registry=r)
        self.vote_reception = Histogram(
            "vote_reception_seconds",
            "Seed 11.1 'Vote Reception': from the voter signing a vote to this node's gossip edge accepting "
            "it (publisher batching, GossipSub, parsing, signature check), by receiving node; clocks of "
            "different machines skew it by their offset.",
            ["node"], buckets=RECEPTION_BUCKETS, registry=r)
        self.etcd_duration = Histogram(
            "etcd_operation_duration_seconds",
            "etcd call latency by operation (claim, repair_head, get, ...) and outcome: every vote waits on "
            "one claim transaction, so this bounds vote latency.",
            ["operation", "outcome"], buckets=ETCD_BUCKETS, registry=r)
        # --- retention (Algorithm 7) ------------------------------------------------------------
        self.gc_runs = Counter(
            "gc_runs_total", "Retention runs by outcome (ok, failed): failed runs let etcd and the "
            "projections grow without bound.", ["outcome"], registry=r)
        self.gc_deleted = Counter(
            "gc_deleted_total", "Items expired or archived by retention, by kind.", ["kind"], registry=r)
        self.gc_last_success = Gauge(
            "gc_last_success_timestamp_seconds", "Unix time of the last successful retention run.",
            registry=r)
        # --- gossip (read from the hosts at scrape time) ----------------------------------------
        self.gossip = _GossipCollector()
        r.register(self.gossip)
        # Known label values start at 0: a counter whose first sample is already 1 hides that
        # first increment from rate() and increase(), and so from the alerts.
        for status in sorted(FINAL):
            self.transactions_closed.labels(status)
        for result in ("confirmed", "failed"):
            self.blockchain_submissions.labels(result)
        for outcome in ("ok", "failed"):
            self.gc_runs.labels(outcome)


REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
METRICS = Metrics(REGISTRY)


def serve_metrics(port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY,
                  health: Callable[[], bool] | None = None) -> WSGIServer:
    """Serve ``/metrics`` (and ``/health``) from a daemon thread; ``.shutdown()`` stops it.

    ``/health`` answers 200 ``ok`` while ``health()`` is true (or always, without one) and 503
    otherwise: the compose healthchecks call it. Port 0 picks a free port
    (``server.server_address[1]``). Loopback by default; containers pass ``host="0.0.0.0"``.
    """
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            try:
                ok = health() if health else True
            except Exception:
                ok = False
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"unhealthy\n"]
        return metrics_app(environ, start_response)

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name=f"metrics:{port}", daemon=True).start()
    return server


def metrics_address_from_env() -> tuple[str, int] | None:
    """``(TVOTE_METRICS_HOST or 127.0.0.1, TVOTE_METRICS_PORT)``, or None when the port is not set: the
    fallback of each role's ``--metrics-listen HOST:PORT``."""
    port = os.environ.get(METRICS_PORT_VAR)
    if not port:
        return None
    return os.environ.get(METRICS_HOST_VAR, "127.0.0.1"), int(port)


def serve_from_env(health: Callable[[], bool] | None = None,
                   at: tuple[str, int] | None = None) -> WSGIServer | None:
    """Serve metrics on ``at`` (a role's ``--metrics-listen``), else if ``TVOTE_METRICS_PORT`` is set (host
    ``TVOTE_METRICS_HOST``, default loopback), else not at all."""
    at = at or metrics_address_from_env()
    if at is None:
        return None
    return serve_metrics(at[1], at[0], health=health)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every 15 s must not flood stderr
        return None


# --- process-local helpers for nodes, the submitter and GC -------------------------------------


def drop_reason(error: BaseException) -> str:
    for cls, reason in DROP_REASONS:
        if isinstance(error, cls):
            return reason
    return "error"


def observe_results(node: str, commands: Sequence[Any], results: Sequence[Any], metrics: Metrics = METRICS) -> None:
    """Count a Recorder batch: one outcome per command; rejected votes become ``votes_dropped_total``.

    ``results[i].status.value`` is the outcome; a rejected ``ReceiveVote`` (by class name, so this
    module does not depend on the rules) is a vote dropped at the edge, by reason.
    """
    if node not in metrics.nodes_seen:
        metrics.nodes_seen.add(node)
        for outcome in OUTCOMES:
            metrics.log_appends.labels(node, outcome)
        for _, reason in DROP_REASONS:
            metrics.votes_dropped.labels(node, reason)
    for cmd, res in zip(commands, results, strict=False):
        metrics.log_appends.labels(node, res.status.value).inc()
        if res.error is not None and type(cmd).__name__ == "ReceiveVote":
            metrics.votes_dropped.labels(node, drop_reason(res.error)).inc()


def store_error(node: str, store: str, metrics: Metrics = METRICS) -> None:
    """Count one failed call to ``store`` ("postgres" or "etcd")."""
    metrics.store_errors.labels(node, store).inc()


@contextmanager
def etcd_timer(operation: str, metrics: Metrics = METRICS) -> Iterator[None]:
    """Time one etcd call; an exception is recorded as outcome="error" and re-raised."""
    t0 = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        metrics.etcd_duration.labels(operation, outcome).observe(time.perf_counter() - t0)


def register_gossip(node: str, snapshot: Callable[[], dict[str, int]], metrics: Metrics = METRICS) -> None:
    """Expose a gossip host's counters (e.g. ``host.counters.snapshot``) as gossipsub_messages_total."""
    with metrics.gossip.lock:
        metrics.gossip.sources[node] = snapshot


def unregister_gossip(node: str, metrics: Metrics = METRICS) -> None:
    with metrics.gossip.lock:
        metrics.gossip.sources.pop(node, None)


def observe_gc(ok: bool, deleted: dict[str, int] | None = None, metrics: Metrics = METRICS) -> None:
    """Record one retention run: its outcome and what it expired/archived, by kind."""
    metrics.gc_runs.labels("ok" if ok else "failed").inc()
    for kind, n in (deleted or {}).items():
        metrics.gc_deleted.labels(kind).inc(n)
    if ok:
        metrics.gc_last_success.set(time.time())


def exposed_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Every sample name the registry can expose (counter families with their ``_total``)."""
    names: set[str] = set()
    for fam in registry.collect():
        names.add(fam.name)
        if fam.type == "counter":
            names.add(fam.name + "_total")
        elif fam.type == "histogram":
            names.update(fam.name + s for s in ("_bucket", "_sum", "_count"))
        names.update(s.name for s in fam.samples)
    return names
