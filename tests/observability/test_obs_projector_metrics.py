"""Against real Postgres: metrics folded from the log equal the gauges primed from the projections.

This is what a restarted projector relies on: ``EventMetrics.prime_from_db`` reads the SQL tables at
the projector's position and must land on the same gauges as folding the whole log.
"""

from __future__ import annotations

import psycopg
import pytest
from integration.conftest import database, pg_server  # noqa: F401  (fixtures: real Postgres per test)
from integration.test_projections import scenario
from prometheus_client import CollectorRegistry

from observability import metrics as om
from projections import metrics as pm
from projections.projector import Projector

pytestmark = pytest.mark.integration
GAUGES = ("active_votes", "banned_peers_total", "eligible_members", "cluster_threshold", "quorum_possible")


def test_primed_gauges_equal_the_folded_log(database) -> None:  # noqa: F811
    rec = scenario(database)
    rows = rec.store.read_all(after=0, limit=100_000)
    rec.store.close()
    folded = om.Metrics(CollectorRegistry())
    pm.EventMetrics(folded).observe(rows)

    p = Projector(database.app_dsn)
    p.catch_up()
    position = p.position()
    p.close()
    assert position == rows[-1].position
    primed = om.Metrics(CollectorRegistry())
    with psycopg.connect(database.app_dsn) as conn:
        pm.EventMetrics(primed).prime_from_db(conn, position)

    for g in GAUGES:
        assert primed.registry.get_sample_value(g) == folded.registry.get_sample_value(g), g
    rep = {s.labels["node_id"]: s.value for f in folded.peer_reputation.collect() for s in f.samples}
    assert rep == {s.labels["node_id"]: s.value for f in primed.peer_reputation.collect() for s in f.samples}
    assert primed.registry.get_sample_value("projector_position", {"projector": "main"}) == position
    assert folded.registry.get_sample_value("quorum_possible") == 0  # 3 of 5 banned, t = 3 (R10)
    # counters: only the folded observer counted; priming never counts
    assert (folded.registry.get_sample_value("threshold_reached_total") or 0) >= 1  # tx_ok
    assert primed.registry.get_sample_value("threshold_reached_total") == 0
