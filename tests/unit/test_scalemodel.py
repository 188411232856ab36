"""The scale model's pure logic (``chaos.scalemodel``): monotone, saturation where utilisation reaches 1, batching,
and the node as the code has it: aimed delivery, one recorder per transaction, every node following the log.

A fixed calibration of the order measured on the 2-core box keeps every figure deterministic.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaos.scalemodel import (
    Calibration,
    Deployment,
    Gossip,
    Scenario,
    copies_received,
    hops,
    max_rate,
    mesh_degree,
    predict,
    publisher,
    reach,
)

CAL = Calibration(
    gossip_copy_cpu_s=350e-6, gossip_hop_s=6e-3, vote_verify_cpu_s=60e-6, vote_edge_cpu_s=15e-6,
    decide_cpu_s=20e-6, decide_per_member_cpu_s=0.1e-6, follow_cpu_s=30e-6, follow_per_member_cpu_s=0.05e-6,
    exec_cpu_s=2.5e-3, exec_vote_cpu_s=100e-6, refusal_cpu_s=1.3e-3, query_latency_s=0.25e-3,
    etcd_txn_latency_s=3.5e-3, etcd_capacity_txn_per_s=800.0, etcd_cpu_per_txn_s=3e-3, etcd_idle_cores=0.04,
    pg_append_latency_s=2.3e-3, pg_capacity_appends_per_s=400.0, pg_cpu_per_append_s=0.6e-3,
    pg_cpu_per_query_s=0.1e-3, api_request_cpu_s=0.5e-3, driver_request_cpu_s=0.4e-3, node_idle_cores=0.03,
    direct_recv_cpu_s=0.8e-3, direct_send_cpu_s=0.3e-3, follow_append_cpu_s=0.5e-3,
)
DEPLOYMENTS = [Deployment("2-core machines", cores_per_node=2), Deployment("8-core machines", cores_per_node=8),
               Deployment("this box", shared_cores=2)]

deployments = st.sampled_from(DEPLOYMENTS)
sizes = st.integers(min_value=1, max_value=150)
rates = st.floats(min_value=0.0, max_value=3000.0, allow_nan=False)


def scenario(n: int, rate: float, attempts: float | None = 1.0) -> Scenario:
    return Scenario(n, math.ceil(2 * n / 3), rate, attempts)


@settings(max_examples=150, deadline=None)
@given(sizes, rates, rates, deployments, st.sampled_from([None, 1.0]))
def test_more_rate_never_lowers_cpu(n: int, r1: float, r2: float, dep: Deployment, attempts: float | None) -> None:
    lo, hi = sorted((r1, r2))
    a, b = predict(scenario(n, lo, attempts), dep, CAL), predict(scenario(n, hi, attempts), dep, CAL)
    assert b.node_cpu_demand_cores >= a.node_cpu_demand_cores - 1e-12
    assert b.node_cpu_cores >= a.node_cpu_cores - 1e-12
    for k in a.utilisation:
        assert b.utilisation[k] >= a.utilisation[k] - 1e-12


@settings(max_examples=150, deadline=None)
@given(sizes, sizes, rates, deployments)
def test_more_nodes_never_lower_cpu(n1: int, n2: int, rate: float, dep: Deployment) -> None:
    """Cluster-wide, and per node for the work every node does on every vote (transport, stores).

    A node's own CPU may fall as N grows at a low rate: with one recorder per transaction each node records 1/N of
    the transactions, and their per-transaction fixed costs (a few executes) shrink per node faster than the
    per-vote work grows (test_one_recorder_spreads_the_recording_over_the_nodes).
    """
    lo, hi = sorted((n1, n2))
    a, b = predict(scenario(lo, rate), dep, CAL), predict(scenario(hi, rate), dep, CAL)
    assert hi * b.node_cpu_demand_cores >= lo * a.node_cpu_demand_cores - 1e-12
    for k in ("etcd", "postgres", "gossip thread", "box cpu"):
        if k in a.utilisation:
            assert b.utilisation[k] >= a.utilisation[k] - 1e-12
    if not (a.saturated or b.saturated):  # stages are given at the completed rate
        for k in ("gossip", "edge", "verify", "follow"):
            assert b.node_cpu_by_stage[k] >= a.node_cpu_by_stage[k] - 1e-12


def test_one_recorder_spreads_the_recording_over_the_nodes() -> None:
    dep = DEPLOYMENTS[1]
    small, large = predict(scenario(3, 1.0), dep, CAL), predict(scenario(10, 1.0), dep, CAL)
    assert large.node_cpu_by_stage["record"] < small.node_cpu_by_stage["record"]
    assert 10 * large.node_cpu_by_stage["record"] > 3 * small.node_cpu_by_stage["record"]  # cluster-wide: more


@settings(max_examples=150, deadline=None)
@given(sizes, rates, deployments, st.sampled_from([None, 1.0]))
def test_saturated_exactly_when_some_utilisation_reaches_one(n: int, rate: float, dep: Deployment,
                                                            attempts: float | None) -> None:
    p = predict(scenario(n, rate, attempts), dep, CAL)
    assert p.saturated == (max(p.utilisation.values()) >= 1)
    assert p.bottleneck == max(p.utilisation, key=p.utilisation.__getitem__)
    if p.saturated:
        assert p.completed_tx_per_s == p.max_tx_per_s <= rate
        assert math.isinf(p.e2e_p99_s) and math.isinf(p.reception_p50_s)
    else:
        assert p.completed_tx_per_s == rate
        assert 0 < p.e2e_p50_s <= p.e2e_p99_s < math.inf
        assert p.reception_p50_s <= p.reception_p99_s


@pytest.mark.parametrize("dep", DEPLOYMENTS, ids=lambda d: d.name)
@pytest.mark.parametrize("n", [4, 10, 50, 100])
def test_max_rate_is_where_utilisation_reaches_one(dep: Deployment, n: int) -> None:
    top, first = max_rate(scenario(n, 1.0), dep, CAL)
    if top == 0:  # the idle cluster alone does not fit
        assert predict(scenario(n, 0.0), dep, CAL).saturated
        return
    below, above = predict(scenario(n, top * 0.99), dep, CAL), predict(scenario(n, top * 1.01), dep, CAL)
    assert not below.saturated and above.saturated
    assert above.first_saturating == first == max(above.utilisation, key=above.utilisation.__getitem__)


def test_a_crowded_box_saturates_before_any_load() -> None:
    p = predict(scenario(100, 500.0), Deployment("box", shared_cores=2), CAL)
    assert p.saturated and p.max_tx_per_s == 0 and p.first_saturating == "box cpu"


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=2, max_value=120), st.floats(min_value=1.0, max_value=2000.0))
def test_batching_lowers_gossip_cost_per_vote(n: int, rate: float) -> None:
    dep = DEPLOYMENTS[1]

    def per_vote(p) -> float:
        return p.node_cpu_by_stage["gossip"] / (n * p.completed_tx_per_s)

    def interval(s: float) -> Gossip:
        return Gossip(publish_interval_s=s, publish_interval_per_member_s=0.0, max_publish_interval_s=s)

    narrow = predict(scenario(n, rate), dep, CAL, interval(0.0001))
    wide = predict(scenario(n, rate), dep, CAL, interval(0.05))
    assert wide.votes_per_message >= narrow.votes_per_message
    if wide.completed_tx_per_s == narrow.completed_tx_per_s == rate:
        assert per_vote(wide) <= per_vote(narrow) + 1e-15
    batched = predict(Scenario(n, 1, rate, ballots_per_request=50), dep, CAL, interval(0.0001))
    assert batched.votes_per_message >= 50
    assert batched.node_cpu_demand_cores <= narrow.node_cpu_demand_cores + 1e-12


def test_gossip_cost_per_vote_falls_once_an_interval_holds_several_votes() -> None:
    dep = DEPLOYMENTS[1]  # N=10: the publisher's interval under load is 12.5 ms x 10 = 125 ms
    slow, fast = predict(scenario(10, 4.0), dep, CAL), predict(scenario(10, 80.0), dep, CAL)
    assert slow.votes_per_message == 1 and fast.votes_per_message == 10
    assert fast.node_cpu_by_stage["gossip"] < 20 * slow.node_cpu_by_stage["gossip"]


def test_designated_recorder_takes_fewer_etcd_transactions() -> None:
    dep = DEPLOYMENTS[1]
    everyone, one = predict(scenario(10, 5.0, None), dep, CAL), predict(scenario(10, 5.0), dep, CAL)
    assert one.etcd_txn_per_s < everyone.etcd_txn_per_s
    assert one.node_cpu_by_stage["record"] < everyone.node_cpu_by_stage["record"]
    assert one.e2e_p50_s < everyone.e2e_p50_s  # one round instead of t rounds on the head


@settings(max_examples=50, deadline=None)
@given(sizes, rates, deployments)
def test_deterministic(n: int, rate: float, dep: Deployment) -> None:
    assert predict(scenario(n, rate), dep, CAL) == predict(scenario(n, rate), dep, CAL)


def test_mesh_geometry() -> None:
    g = Gossip()
    assert copies_received(4, g) == 3  # the 4-host bench: once from the origin, once from each relay
    assert [mesh_degree(n, g) for n in (1, 2, 7, 8, 100)] == [0, 1, 6, 6, 6]
    assert copies_received(7, g) == 6 and 5 < copies_received(100, g) < 5.1
    assert hops(4, g) == 1 and 2 < hops(100, g) < 3


def test_calibration_from_dict_ignores_unknown_keys() -> None:
    data = {f: getattr(CAL, f) for f in CAL.__dataclass_fields__ if f != "notes"} | {"_measured_extra": 1.0}
    assert Calibration.from_dict(data) == CAL
    assert replace(CAL, exec_cpu_s=1.0) != CAL


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError):
        Scenario(10, 11, 1.0)
    with pytest.raises(ValueError):
        Deployment("both", cores_per_node=2, shared_cores=2)
    assert Scenario(10, 7, 1.0, 50).attempts == 10 and Scenario(10, 7, 1.0, 0).attempts == 1
    assert Scenario(10, 7, 1.0).attempts == 1 and Scenario(10, 7, 1.0, None).attempts == 10


# ------------------------------------------------------------------------------ the node as the code has it


def test_publisher_interval_and_votes_per_message() -> None:
    """node/wire.py: max(50 ms, 12.5 ms x N), at most 500 ms; a vote alone (sent at once) until votes come closer."""
    g = Gossip()
    assert [g.interval_s(n) for n in (4, 10, 100)] == [0.05, 0.125, 0.5]
    assert publisher(scenario(10, 8.0), g, 8.0) == (1.0, 0.0)  # 8/s x 125 ms = 1: each sent at once, alone
    per_msg, wait = publisher(scenario(10, 80.0), g, 80.0)
    assert per_msg == 10 and 0 < wait < 0.125 / 2


def test_aimed_delivery_reaches_the_fanout_not_everyone() -> None:
    g = Gossip()
    assert reach(10, g, 1.0) == pytest.approx(2.0)  # one vote: its first two ranked members besides the voter
    assert reach(3, g, 1.0) == pytest.approx(2.0) and reach(2, g, 1.0) == pytest.approx(1.0)
    assert 2 < reach(10, g, 3.0) < reach(10, g, 10.0) < 9  # a batch goes to the union of its votes' recipients
    assert reach(10, Gossip(fanout=0), 1.0) == 9  # --vote-fanout 0: every member
    assert g.aimed(33) and not g.aimed(34) and reach(50, g, 1.0) == 49  # over 32 others: the mesh, everyone
    assert reach(10, Gossip(direct=False), 1.0) == 9


def test_aimed_votes_cost_fanout_copies_each() -> None:
    """One vote a message: each node sends ``fanout`` copies of its vote and receives as many, once each."""
    n, rate = 10, 4.0
    p = predict(scenario(n, rate), DEPLOYMENTS[1], CAL)
    assert p.aimed and p.copies_per_message == 1 and p.recipients_per_message == pytest.approx(2.0)
    expected = rate * 2 * (CAL.direct_send_cpu_s + CAL.direct_recv_cpu_s)
    assert p.node_cpu_by_stage["gossip"] == pytest.approx(expected)
    assert p.node_cpu_by_stage["edge"] == pytest.approx(rate * 2 * CAL.vote_edge_cpu_s)  # 2 votes in, not N-1
    mesh = predict(scenario(n, rate), DEPLOYMENTS[1], CAL, Gossip(direct=False))
    assert not mesh.aimed and mesh.copies_per_message == copies_received(n, Gossip())
    assert mesh.node_cpu_by_stage["gossip"] > 3 * p.node_cpu_by_stage["gossip"]
    assert mesh.node_cpu_by_stage["edge"] == pytest.approx(rate * (n - 1) * CAL.vote_edge_cpu_s)


@pytest.mark.parametrize("n", [4, 10, 50, 100])
def test_one_recorder_decides_what_it_records_and_every_node_follows_the_rest(n: int) -> None:
    rate = 1.0
    p = predict(scenario(n, rate), DEPLOYMENTS[1], CAL)
    stage = p.node_cpu_by_stage
    # each node records (and decides) about rate votes/s: its share of the N x rate votes, one claimant each
    assert stage["decide"] == pytest.approx(rate * (CAL.decide_cpu_s + n * CAL.decide_per_member_cpu_s))
    # ... and reads, checks and decides again every row the others wrote: N-1 times each event cluster-wide
    per_event = CAL.follow_cpu_s + n * CAL.follow_per_member_cpu_s
    appends = p.pg_appends_per_s
    assert n * stage["follow"] == pytest.approx((n - 1) * rate * (n + 2) * per_event
                                                + (n - 1) * appends * CAL.follow_append_cpu_s)
    # every vote's signature once per node, and the signature of every other node's append
    assert stage["verify"] == pytest.approx((n * rate + appends * (n - 1) / n) * CAL.vote_verify_cpu_s)
    assert appends == pytest.approx(p.etcd_txn_per_s)  # nobody races: every claim lands
    assert 1 <= p.record_batch <= n and appends == pytest.approx(n * rate / p.record_batch)
    assert p.cpu_ms_per_consensus == pytest.approx(1e3 * n * p.node_cpu_cores / rate)


def test_record_batches_grow_with_the_spread_of_a_transactions_votes() -> None:
    near = predict(scenario(10, 4.0), DEPLOYMENTS[1], replace(CAL, gossip_hop_s=1e-3))
    far = predict(scenario(10, 4.0), DEPLOYMENTS[1], replace(CAL, gossip_hop_s=20e-3))
    assert near.record_batch > far.record_batch  # the votes straggle in: more, smaller batches
    busy = predict(scenario(10, 40.0), DEPLOYMENTS[1], CAL)  # the publishers hold votes for up to 125 ms
    assert busy.record_batch < predict(scenario(10, 4.0), DEPLOYMENTS[1], CAL).record_batch


def test_the_hold_lands_the_thresholds_votes_in_one_append_and_the_rest_in_one_more() -> None:
    straggling = replace(CAL, gossip_hop_s=20e-3)  # without the hold, the votes would land in about 3 appends
    held = predict(scenario(10, 4.0), DEPLOYMENTS[1], straggling)
    unheld = predict(scenario(10, 4.0), DEPLOYMENTS[1], straggling, Gossip(record_hold_s=0.0))
    assert held.record_batch == pytest.approx(5.0) and unheld.record_batch < 4
    assert held.pg_appends_per_s < unheld.pg_appends_per_s
    assert held.node_cpu_by_stage["follow"] < unheld.node_cpu_by_stage["follow"]  # fewer appends to check
    everyone = predict(Scenario(4, 4, 4.0), DEPLOYMENTS[1], straggling)  # t = N: nobody is left for a second
    assert everyone.record_batch == pytest.approx(4.0)
    # a hold no longer than the worker's pass is skipped (duty.may_hold): the drained batches as before
    short = predict(scenario(10, 4.0), DEPLOYMENTS[1], straggling, Gossip(record_hold_s=0.001))
    assert short.record_batch == pytest.approx(unheld.record_batch)


def test_follow_reads_grow_with_the_log_moves_up_to_the_follow_schedule() -> None:
    cal = replace(CAL, query_cpu_s=100e-6)
    dep = DEPLOYMENTS[1]

    def reads_cpu(rate: float) -> float:
        p = predict(scenario(10, rate), dep, cal)
        return p.node_cpu_by_stage["follow"] - predict(scenario(10, rate), dep, CAL).node_cpu_by_stage["follow"]

    assert reads_cpu(0.0) == 0  # a quiet log: the idle reads are part of node_idle_cores
    assert 0 < reads_cpu(0.1) < reads_cpu(1.0) <= reads_cpu(100.0)
    assert reads_cpu(100.0) == pytest.approx((cal.follow_hz - cal.follow_idle_hz) * 100e-6)  # every 20 ms at most
