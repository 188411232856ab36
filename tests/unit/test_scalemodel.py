"""The scale model's pure logic (``chaos.scalemodel``): monotone, saturation where utilisation reaches 1, batching.

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
)

CAL = Calibration(
    gossip_copy_cpu_s=350e-6, gossip_hop_s=6e-3, vote_verify_cpu_s=60e-6, vote_edge_cpu_s=15e-6,
    decide_cpu_s=20e-6, decide_per_member_cpu_s=0.1e-6, follow_cpu_s=30e-6, follow_per_member_cpu_s=0.05e-6,
    exec_cpu_s=2.5e-3, exec_vote_cpu_s=100e-6, refusal_cpu_s=1.3e-3, query_latency_s=0.25e-3,
    etcd_txn_latency_s=3.5e-3, etcd_capacity_txn_per_s=800.0, etcd_cpu_per_txn_s=3e-3, etcd_idle_cores=0.04,
    pg_append_latency_s=2.3e-3, pg_capacity_appends_per_s=400.0, pg_cpu_per_append_s=0.6e-3,
    pg_cpu_per_query_s=0.1e-3, api_request_cpu_s=0.5e-3, driver_request_cpu_s=0.4e-3, node_idle_cores=0.03,
)
DEPLOYMENTS = [Deployment("2-core machines", cores_per_node=2), Deployment("8-core machines", cores_per_node=8),
               Deployment("this box", shared_cores=2)]

deployments = st.sampled_from(DEPLOYMENTS)
sizes = st.integers(min_value=1, max_value=150)
rates = st.floats(min_value=0.0, max_value=3000.0, allow_nan=False)


def scenario(n: int, rate: float, attempts: float | None = None) -> Scenario:
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
    lo, hi = sorted((n1, n2))
    a, b = predict(scenario(lo, rate), dep, CAL), predict(scenario(hi, rate), dep, CAL)
    assert b.node_cpu_demand_cores >= a.node_cpu_demand_cores - 1e-12
    for k in ("etcd", "postgres", "gossip thread", "node GIL"):
        assert b.utilisation[k] >= a.utilisation[k] - 1e-12


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

    narrow = predict(scenario(n, rate), dep, CAL, Gossip(batch_window_s=0.0001))
    wide = predict(scenario(n, rate), dep, CAL, Gossip(batch_window_s=0.05))
    assert wide.votes_per_message >= narrow.votes_per_message
    if wide.completed_tx_per_s == narrow.completed_tx_per_s == rate:
        assert per_vote(wide) <= per_vote(narrow) + 1e-15
    batched = predict(Scenario(n, 1, rate, ballots_per_request=50), dep, CAL, Gossip(batch_window_s=0.0001))
    assert batched.votes_per_message >= 50
    assert batched.node_cpu_demand_cores <= narrow.node_cpu_demand_cores + 1e-12


def test_gossip_cost_per_vote_falls_once_a_window_holds_several_votes() -> None:
    dep = DEPLOYMENTS[1]
    slow, fast = predict(scenario(10, 100.0), dep, CAL), predict(scenario(10, 1000.0), dep, CAL)
    assert slow.votes_per_message == 1 and fast.votes_per_message == 5
    assert fast.node_cpu_demand_cores < 10 * slow.node_cpu_demand_cores


def test_designated_recorder_takes_fewer_etcd_transactions() -> None:
    dep = DEPLOYMENTS[1]
    everyone, one = predict(scenario(10, 5.0), dep, CAL), predict(scenario(10, 5.0, 1.0), dep, CAL)
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
