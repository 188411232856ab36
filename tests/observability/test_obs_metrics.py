"""The metrics module: the seed's names are exposed, and the log maps onto the right counters and gauges.

Events come from the real rules (``events.rules``), so a change in what the rules emit shows
up here rather than as a silently flat dashboard.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from helpers import trustees
from obs_scenario import recorded, scenario
from prometheus_client import CollectorRegistry, generate_latest

from events import errors
from events import model as m
from events.rules import CheckDeadline
from observability import metrics as om
from projections import metrics as pm

PEER = {int(t.node_id[5:]): t.peer_id for t in trustees(4)}


def value(metrics: om.Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_registry_exposes_every_seed_name() -> None:
    names = om.exposed_names(om.REGISTRY)
    assert set(om.SEED_METRICS) <= names
    text = generate_latest(om.REGISTRY).decode()
    for name in om.SEED_METRICS:
        assert f"# HELP {name} " in text, name


def test_every_metric_says_why() -> None:
    families = [f for f in om.Metrics(CollectorRegistry()).registry.collect()]
    assert len(families) >= len(om.SEED_METRICS)
    for fam in families:
        assert len(fam.documentation) >= 30, f"{fam.name}: HELP should say why it matters"


def test_event_sequence_updates_the_right_metrics() -> None:
    events, _ = scenario()
    types = [e.TYPE for e in events]
    assert {"ThresholdReached", "SubmissionConfirmed", "TransactionAborted", "TransactionExpired"} <= set(types)
    mt = pm.metrics_from_events(recorded(events))

    assert value(mt, "votes_received_total", node_id="node-1") == 2  # tx1 and tx2's first vote
    assert value(mt, "votes_received_total", node_id="node-2") == 2  # tx1, tx3
    assert value(mt, "votes_received_total", node_id="node-3") == 1
    assert value(mt, "votes_received_total", node_id="node-4") == 0  # exists from admission, for rate()
    assert value(mt, "votes_rejected_byzantine_total", node_id="node-4", kind="MINORITY_VOTE") == 0
    assert value(mt, "transactions_closed_total", status="ABORTED_NO_QUORUM") == 0
    assert value(mt, "votes_rejected_byzantine_total", node_id="node-1", kind="DOUBLE_VOTING") == 1
    assert value(mt, "votes_rejected_byzantine_total", node_id="node-2", kind="INVALID_SIGNATURE") == 1
    assert value(mt, "silent_failures_total", node_id="node-3") == 0  # R9: tx3 never reached t
    assert value(mt, "silent_failures_total", node_id="node-4") == 1  # tx1 did
    assert value(mt, "transactions_opened_total") == 3  # the forged vote opens nothing (R7)
    assert value(mt, "threshold_reached_total") == 1
    assert value(mt, "transactions_aborted_byzantine_total") == 1
    assert value(mt, "transactions_closed_total", status="ABORTED_BYZANTINE") == 1
    assert value(mt, "transactions_closed_total", status="EXPIRED") == 1
    assert value(mt, "transactions_closed_total", status="CONFIRMED") == 1
    assert value(mt, "blockchain_submissions_total", result="confirmed") == 1
    assert value(mt, "submission_latency_seconds_count") == 1
    assert value(mt, "submission_latency_seconds_sum") == pytest.approx(3.0)  # started -> confirmed
    assert value(mt, "node_bans_total", node_id="node-1", reason="DOUBLE_VOTING") == 1
    assert value(mt, "node_bans_total", node_id="node-2", reason="INVALID_SIGNATURE") == 1
    assert value(mt, "events_projected_total", event_type="VoteAccepted") == 5
    assert value(mt, "projector_position", projector="main") == len(events)
    # gauges: the cluster as the log leaves it
    assert value(mt, "active_votes") == 0
    assert value(mt, "banned_peers_total") == 2
    assert value(mt, "eligible_members") == 2
    assert value(mt, "cluster_threshold") == 3
    assert value(mt, "quorum_possible") == 0  # R10: 2 eligible < t = 3
    assert value(mt, "peer_reputation", node_id="node-1", peer_id=PEER[1]) == 0
    assert value(mt, "peer_reputation", node_id="node-2", peer_id=PEER[2]) == 0
    assert value(mt, "peer_reputation", node_id="node-3", peer_id=PEER[3]) == pytest.approx(1.0)
    assert value(mt, "peer_reputation", node_id="node-4", peer_id=PEER[4]) == pytest.approx(0.9)


def test_gauges_track_open_transactions_and_quorum_as_events_arrive() -> None:
    events, _ = scenario()
    mt = om.Metrics(CollectorRegistry())
    obs = pm.EventMetrics(mt)
    first_vote = next(i for i, e in enumerate(events) if isinstance(e, m.TransactionOpened))
    obs.observe(events[: first_vote + 1])
    assert value(mt, "active_votes") == 1
    assert value(mt, "quorum_possible") == 1
    assert value(mt, "eligible_members") == 4


def test_priming_restores_gauges_without_counting() -> None:
    """A projector restarting mid-log primes from the past and counts only what is new."""
    events, _ = scenario()
    rows = recorded(events)
    cut = len(rows) // 2
    whole = pm.metrics_from_events(rows)
    mt = om.Metrics(CollectorRegistry())
    obs = pm.EventMetrics(mt)
    obs.prime(rows[:cut])
    assert value(mt, "threshold_reached_total") == 0
    obs.observe(rows[cut:])
    for g in ("active_votes", "banned_peers_total", "eligible_members", "cluster_threshold", "quorum_possible"):
        assert value(mt, g) == value(whole, g), g
    before = sum(isinstance(e, m.VoteAccepted) for e in events[:cut])
    total = sum(value(whole, "votes_received_total", node_id=f"node-{i}") or 0 for i in range(1, 5))
    counted = sum(value(mt, "votes_received_total", node_id=f"node-{i}") or 0 for i in range(1, 5))
    assert counted == total - before


def test_removed_member_leaves_the_reputation_gauge() -> None:
    ts = trustees(3)
    events: list[m.Event] = [m.MemberAdmitted(t.node_id, t.vote_key.hex(), t.peer_id, "op", 0) for t in ts]
    events += [m.ClusterConfigured(2, 30_000, 500, 100, "op", 0, 50, 0), m.MemberRemoved("node-3", "op", "retired", 0)]
    mt = pm.metrics_from_events(events)
    assert value(mt, "peer_reputation", node_id="node-1", peer_id=PEER[1]) == 1.0
    assert value(mt, "peer_reputation", node_id="node-3", peer_id=PEER[3]) is None
    assert value(mt, "eligible_members") == 2
    assert value(mt, "quorum_possible") == 1


def test_recorder_results_count_outcomes_and_edge_drops() -> None:
    from recording.recorder import Result, Status

    assert {s.value for s in Status} == set(om.OUTCOMES)
    mt = om.Metrics(CollectorRegistry())
    tr = trustees(1)[0]
    vote = tr.receive("tx1", 1)
    commands = [vote, vote, vote, vote, CheckDeadline("tx1", 5)]
    results = [
        Result(Status.APPENDED, [m.TransactionOpened("tx1", 1, 2)]),
        Result(Status.DUPLICATE),
        Result(Status.REJECTED, error=errors.OutsiderVote("not a member")),
        Result(Status.REJECTED, error=errors.BannedSender("banned")),
        Result(Status.REJECTED, error=errors.UnknownTransaction("no tx")),  # not a vote: no drop
    ]
    om.observe_results("n1", commands, results, mt)
    assert value(mt, "log_appends_total", node="n1", outcome="appended") == 1
    assert value(mt, "log_appends_total", node="n1", outcome="rejected") == 3
    assert value(mt, "votes_dropped_total", node="n1", reason="outsider") == 1
    assert value(mt, "votes_dropped_total", node="n1", reason="banned") == 1
    assert value(mt, "votes_dropped_total", node="n1", reason="invalid") == 0  # initialised for rate()
    assert value(mt, "log_appends_total", node="n1", outcome="deferred") == 0
    assert om.drop_reason(errors.InvalidVote("bad")) == "invalid"


def test_etcd_timer_and_store_errors() -> None:
    mt = om.Metrics(CollectorRegistry())
    with om.etcd_timer("claim", mt):
        pass
    with pytest.raises(errors.StoreUnavailable), om.etcd_timer("claim", mt):
        raise errors.StoreUnavailable("etcd down")
    om.store_error("n1", "postgres", mt)
    assert value(mt, "etcd_operation_duration_seconds_count", operation="claim", outcome="ok") == 1
    assert value(mt, "etcd_operation_duration_seconds_count", operation="claim", outcome="error") == 1
    assert value(mt, "store_errors_total", node="n1", store="postgres") == 1


def test_gossip_counters_are_read_at_scrape_time() -> None:
    from node.p2p.host import GossipCounters

    mt = om.Metrics(CollectorRegistry())
    counters = GossipCounters()
    assert set(om.GOSSIP_FIELDS) <= set(counters.snapshot()), "GOSSIP_FIELDS names a field GossipCounters lacks"
    om.register_gossip("n1", counters.snapshot, mt)
    counters.published += 4
    counters.rejected_banned += 2
    assert value(mt, "gossipsub_messages_total", node="n1", direction="out", outcome="published") == 4
    assert value(mt, "gossipsub_messages_total", node="n1", direction="in", outcome="rejected_banned") == 2

    def broken() -> dict[str, int]:
        raise RuntimeError("host torn down")

    om.register_gossip("n2", broken, mt)  # must not break the scrape
    assert value(mt, "gossipsub_messages_total", node="n1", direction="out", outcome="published") == 4
    om.unregister_gossip("n1", mt)
    assert value(mt, "gossipsub_messages_total", node="n1", direction="out", outcome="published") is None


def test_gc_metrics() -> None:
    mt = om.Metrics(CollectorRegistry())
    om.observe_gc(True, {"etcd_keys": 10, "vote_history": 3}, mt)
    om.observe_gc(False, None, mt)
    assert value(mt, "gc_runs_total", outcome="ok") == 1
    assert value(mt, "gc_runs_total", outcome="failed") == 1
    assert value(mt, "gc_deleted_total", kind="etcd_keys") == 10
    assert (value(mt, "gc_last_success_timestamp_seconds") or 0) > 0


def test_serve_metrics_and_health() -> None:
    mt = om.Metrics(CollectorRegistry())
    healthy = {"ok": True}
    server = om.serve_metrics(0, registry=mt.registry, health=lambda: healthy["ok"])
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        for name in om.SEED_METRICS:
            assert f"# TYPE {name}" in body or f"# TYPE {name.removesuffix('_total')}" in body, name
        assert urllib.request.urlopen(base + "/health", timeout=5).read() == b"ok\n"
        healthy["ok"] = False
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/health", timeout=5)
        assert e.value.code == 503
    finally:
        server.shutdown()
        server.server_close()


def test_serve_from_env_is_off_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(om.METRICS_PORT_VAR, raising=False)
    assert om.serve_from_env() is None
    monkeypatch.setenv(om.METRICS_PORT_VAR, "0")
    server = om.serve_from_env()
    assert server is not None and server.server_address[0] == "127.0.0.1"
    server.shutdown()
    server.server_close()
