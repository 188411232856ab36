"""TLC model-checks the protocol model (tla/ThresholdVote.tla) on every configuration.

Each run prints one summary line with the distinct states explored and the wall time
(run with ``-s`` to see them; they are also attached as junit properties).  The wrong
variants are the non-vacuity check: a model with a known bug must make TLC report the
violation of the invariant that names that bug, or the checks above prove nothing.
"""

from __future__ import annotations

import pytest
from tla_runner import run_tlc


def _report(result, record_property) -> None:
    print("\n" + result.summary())
    record_property("cfg", result.cfg)
    record_property("distinct_states", result.distinct)
    record_property("states_generated", result.generated)
    record_property("wall_seconds", round(result.seconds, 1))


def _explain(result) -> str:
    tail = "\n".join(result.output.splitlines()[-60:])
    return f"{result.summary()}\n--- TLC output (tail) ---\n{tail}"


# (configuration, marks): each is meant to finish within a few minutes on 2 cores.
CONFIGS = [
    pytest.param("MC_N4_T3.cfg", id="N4_T3"),
    pytest.param("MC_N4_T3_2byz.cfg", id="N4_T3_2byz", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
    pytest.param("MC_N5_T4.cfg", id="N5_T4", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
    pytest.param("MC_liveness.cfg", id="liveness"),
]


def test_tla2tools_jar_is_found():
    jar = run_tlc.find_tla2tools_jar()
    assert jar.name == "tla2tools.jar" and jar.stat().st_size > 1_000_000


@pytest.mark.parametrize("cfg", CONFIGS)
def test_model_holds(cfg, record_property):
    result = run_tlc.run_tlc(cfg)
    _report(result, record_property)
    assert result.ok, _explain(result)
    assert result.distinct and result.distinct > 1000, "suspiciously few states: is the model vacuous?"


# Non-vacuity: each deliberately wrong variant must be caught, by the invariant it breaks.
WRONG = [
    pytest.param("MC_wrong_banned_vote_counts.cfg", "BannedNeverCounted", id="banned_vote_counts"),
    pytest.param("MC_wrong_blame_claimed.cfg", "NoHonestBlamed", id="blame_claimed"),
    pytest.param("MC_wrong_no_fencing.cfg", "AtMostOneChainWrite", id="no_fencing"),
    pytest.param("MC_wrong_abort_after_claim.cfg", "AbortedNeverSubmitted", id="abort_after_claim"),
    # R9 as revised / R14: silence charged on a transaction that never reached consensus.
    pytest.param("MC_wrong_blame_without_consensus.cfg", "NoHonestBlamed", id="blame_without_consensus"),
    # R9 / R14: the deadline fires ahead of an honest vote signed before it, queued by a store outage.
    pytest.param("MC_wrong_deadline_during_outage.cfg", "HonestSilenceIsReal", id="deadline_during_outage"),
    # Not a bug, a reachability witness: with the floor ban opted in (MC_N5_T4.cfg's settings) a crashed
    # honest member does get banned, in a state where NoHonestBlamed (checked first) holds.
    pytest.param("MC_reach_honest_floor_ban.cfg", "HonestNeverBanned", id="reach_honest_floor_ban"),
    # Liveness: TLC names no property, it prints the lasso (a behaviour that never writes).
    pytest.param("MC_wrong_lease_outlives_restart.cfg", "Temporal properties", id="lease_outlives_restart"),
]


@pytest.mark.parametrize(("cfg", "broken"), WRONG)
def test_wrong_variant_is_caught(cfg, broken, record_property):
    result = run_tlc.run_tlc(cfg)
    _report(result, record_property)
    record_property("violation", "; ".join(result.violations))
    # 12: an invariant; 13: an action property ([][A]_vars is checked as a property).
    assert result.exit_code in (run_tlc.TLC_SAFETY_VIOLATION, run_tlc.TLC_LIVENESS_VIOLATION), _explain(result)
    assert result.violated, _explain(result)
    assert any(broken in v for v in result.violations), _explain(result)
    # TLC prints the counterexample: the behaviour that breaks the rule.
    assert "The behavior up to this point is" in result.output or "constitutes a counter-example" in result.output
