"""CI-sized chaos scenarios (seed 14.2): N=5 real node processes, ~24 transactions each, one fault each.

The servers are private to this module (a Postgres with fsync on and a 3-member etcd): the scenarios
kill them, which must never touch the servers other suites share. The full sizes and the figures
are ``python bench/chaos_bench.py`` (bench/RESULTS.md).
"""

from __future__ import annotations

import pytest
from helpers import tla_tool

from chaos import scenarios
from chaos.harness import ChaosEnv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CATALOGUE = dict(scenarios.catalogue(full=False))
CI = [
    "node crash (SIGKILL) + restart",
    "message loss 20% (every node)",
    "clock skew +5s / -5s",
    "etcd member kill (not the nodes')",
    "etcd quorum loss (2 of 3)",
    "Postgres kill (immediate) + restart",
    "frozen process: SIGSTOP 1 of 5",
    "byzantine double under load",
    "byzantine forge under load",
    "byzantine silent under load",
    "R14: Postgres down 10 s, deadline 5 s",
    "R14: a trustee down 30 s, deadline 5 s",
    "R14: one API opens txs nobody votes on",
]

# Their logs are also trace-checked by TLC against tla/ThresholdVote.tla (tla/trace_check.py, ~4 s each):
# the Byzantine ones and one whose deadline fires after a store outage. The bench checks every scenario.
TRACE_CHECKED = {
    "byzantine double under load",
    "byzantine forge under load",
    "byzantine silent under load",
    "R14: Postgres down 10 s, deadline 5 s",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with ChaosEnv(tmp_path_factory.mktemp("chaos")) as e:
        yield e


@pytest.mark.parametrize("name", CI)
def test_scenario(env, name):
    res = scenarios.run(env, name, **CATALOGUE[name])
    if res.report is not None:
        res.report.print(name)
    print(res.row())
    assert res.error is None, res.row()
    if name in TRACE_CHECKED:
        tc = tla_tool("trace_check").check_dsn(res.log_dsn)
        print(tc.summary())
        assert tc.accepted, tc.summary()
    if res.exited:
        # Known gap, reported in bench/RESULTS.md: an etcd call on a failed endpoint raises pyetcd's ValueError
        # ("Trying to use a failed node"), not StoreUnavailable; the worker thread dies and the node exits,
        # losing the votes its API had acknowledged. Needs a hook in recording/etcd_guard.py and node/service.py.
        pytest.xfail(f"nodes exited during the fault: {res.exited}; lost {res.votes_lost} votes, "
                     f"{res.txs_lost} txs")
    assert res.txs_lost == 0, res.row()
    failed = {c.name for c in res.report.failed}
    if failed == {"acked_votes_logged"} and res.votes_lost == res.lost_in_flight:
        # Known gap, reported in bench/RESULTS.md: POST /votes answers 202 before the vote is recorded or
        # published, so a SIGKILL right after the ack loses it. Needs a hook in node/api.py.
        pytest.xfail(f"{res.lost_in_flight} vote(s) acked <2 s before SIGKILL are not in the log")
    assert not failed, res.row()
    assert res.votes_lost == 0


def test_submitter_sigkill_mid_submission(env, tmp_path):
    """The submitter SIGKILLed three times while consensus flows: every tx CONFIRMED, one chain write each."""
    rig = scenarios.SubmitterRig(tmp_path / "submitter")
    try:
        rig.start_chain()
        start, fault = scenarios.submitter_crash(rig, kills=3)
        res = scenarios.run(env, "submitter SIGKILL", fault, txs=16, rate=4.0, chain=rig.client, submitter=start,
                            settle_timeout=90)
    finally:
        rig.close()
    res.report.print(res.name)
    assert res.held and res.txs_lost == 0 and res.votes_lost == 0, res.row()
    assert res.report.statuses == {"CONFIRMED": 16}
    assert {c.name for c in res.report.checks} >= {"chain_exactly_once", "chain_matches_log"}
