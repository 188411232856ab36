"""Conformance: the TLA+ model (tla/ThresholdVote.tla) and the Python decider agree.

TLC simulates random behaviours of the model (tla/ThresholdVoteTrace.tla, ``-simulate``);
the model prints each one as a list of steps ``<<action, arguments, state after>>``. Every
step is turned into the command a shell would give the decider (``events.rules``), run
through ``decide`` and folded with ``evolve``, and the two states are compared after every
step: transaction status, accepted votes, violations (member, kind), bans, removals,
reputations, the deadline, the consensus value and its certificate, the fencing revision
and the recorded signature. Steps the model treats as no-ops (a duplicate vote, a vote
from a banned member, a stale submitter's append) must leave the decider unchanged too:
an empty decision (R3) or a typed rejection.

Model -> Python: member ``h1`` is node ``h1`` with its own Ed25519 key and peer
``peer-h1``; value ``v1`` is 1, ``v2`` is 2; reputation r is 500*r milli-points (so the
decider's full 1000 is the model's 2), the floor is 500*Floor, a silence costs 500.
Lock acquisition, crashes, lease expiry and chain outages have no decider command: they
only change which commands the shell sends and with which lock revision.

Set TLA_CONFORMANCE_SEED to replay other random behaviours (the default is fixed so a CI
failure can be reproduced).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter

import nacl.signing
import pytest
from tla_runner import TLA_DIR, run_tlc

from events import errors
from events.model import ThresholdReached, ViolationDetected
from events.rules import (
    AdmitMember,
    CheckDeadline,
    Configure,
    ReceiveVote,
    RecordBroadcast,
    RecordConfirmed,
    RecordSigned,
    Reevaluate,
    RemoveMember,
    StartSubmission,
    State,
    decide,
    evolve,
)
from events.vote import SignedVote, Vote, sign

TX = "tx-conformance-1"
VALUE = {"v1": 1, "v2": 2}
VALUE_NAME = {v: k for k, v in VALUE.items()}
REP_UNIT = 500  # milli-points per model reputation point
DEADLINE_NOW = 10**12  # "long after the deadline"
IDLE = "IDLE"

SEED = int(os.environ.get("TLA_CONFORMANCE_SEED", "20261124"))

# (trace configuration, traces, steps per trace, threshold, floor): several hundred traces in all.
TRACE_CONFIGS = [
    pytest.param("Trace_N4_T3.cfg", 250, 30, 3, 1, id="N4_T3_votes"),
    pytest.param("Trace_N4_T3_submit.cfg", 250, 40, 3, 1, id="N4_T3_submit"),
    pytest.param("Trace_N5_T4_floor.cfg", 200, 30, 4, 2, id="N5_T4_floor"),
]


def _key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(f"conformance/{name}".encode()).digest())


def _hash(raw: int) -> str:
    return f"0x{raw:064x}"


class Replay:
    """The shell around the decider for one model behaviour."""

    def __init__(self, init: dict, threshold: int, floor: int) -> None:
        self.members = sorted(str(m) for m in init["acc"])
        self.keys = {m: _key(m) for m in self.members}
        self.state = State()
        self.violations: set[tuple[str, str]] = set()
        self.voters: frozenset[str] | None = None  # ThresholdReached.voters
        for m in self.members:
            self.must(AdmitMember(m, self.keys[m].verify_key.encode(), f"peer-{m}", "conformance"))
        self.must(
            Configure(
                threshold=threshold,
                operator="conformance",
                deadline_ms=30_000,
                reputation_floor=REP_UNIT * floor,
                silent_penalty=REP_UNIT,
            )
        )
        for m in self.members:  # the model's initial reputations are the decider's full score
            assert init["rep"][m] * REP_UNIT == self.state.cluster.members[m].reputation

    def apply(self, command) -> list:
        events = decide(self.state, command)
        for e in events:
            self.state = evolve(self.state, e)
            if isinstance(e, ViolationDetected):
                self.violations.add((e.node_id, e.kind))
            if isinstance(e, ThresholdReached):
                assert self.voters is None, "ThresholdReached recorded twice"
                self.voters = frozenset(e.voters)
        return events

    def must(self, command) -> list:
        return self.apply(command)

    def rejected(self, command) -> bool:
        """Run a command the model says must change nothing: a rejection or no events."""
        try:
            events = self.apply(command)
        except errors.CommandRejected:
            return True
        assert events == [], f"{type(command).__name__} should change nothing, got {events}"
        return False

    # --- the comparison -------------------------------------------------------------------

    def observe(self) -> dict:
        cl, tx = self.state.cluster, self.state.tx
        return {
            "tx": tx.status if tx else IDLE,
            "acc": {n: v.value for n, v in tx.votes.items()} if tx else {},
            "banned": {n for n, m in cl.members.items() if m.banned},
            "removed": {n for n, m in cl.members.items() if not m.active},
            "viol": set(self.violations),
            "rep": {n: m.reputation for n, m in cl.members.items()},
            "dl": bool(tx and tx.deadline_fired),
            "dec": {tx.value} if tx and tx.value is not None else set(),
            "subRev": tx.lock_revision if tx else 0,
            "signed": len(tx.signed) if tx else 0,
        }


def expected(snap: dict) -> dict:
    return {
        "tx": snap["tx"],
        "acc": {str(m): VALUE[str(v)] for m, v in snap["acc"].items() if str(v) != "NoVal"},
        "banned": {str(m) for m in snap["banned"]},
        "removed": {str(m) for m in snap["removed"]},
        "viol": {(str(m), k) for m, k in snap["viol"]},
        "rep": {str(m): r * REP_UNIT for m, r in snap["rep"].items()},
        "dl": snap["dl"],
        "dec": {VALUE[str(v)] for v in snap["dec"]},
        "subRev": snap["subRev"],
        "signed": 1 if snap["signed"] else 0,
    }


def replay_trace(trace: tuple, threshold: int, floor: int, stats: Counter) -> None:
    steps = trace[1]
    assert steps[0][0] == "Init"
    rp = Replay(steps[0][2], threshold, floor)
    assert rp.observe() == expected(steps[0][2])
    pre = steps[0][2]
    for index, (action, args, post) in enumerate(steps[1:], start=1):
        args = [str(a) for a in args]
        where = f"step {index} {action}{tuple(args)}"
        out = {str(m) for m in pre["banned"] | pre["removed"]}
        stats[action] += 1
        if action == "ReceiveVote":
            m, v = args
            vote = sign(Vote(TX, VALUE[v], m, index), rp.keys[m])  # a new timestamp every time (R3)
            cmd = ReceiveVote(vote, f"peer-{m}", now_ms=index)
            if m in out or str(pre["acc"][m]) == v:
                rp.rejected(cmd)  # R10 dropped at the edge / R3 idempotent
                stats["vote no-op"] += 1
            else:
                rp.must(cmd)
        elif action == "ReceiveForged":
            p, m = args
            vote = Vote(TX, 1, m, index)
            bad = SignedVote(vote, rp.keys[p].sign(b"not-the-vote" + vote.signing_bytes()).signature)
            cmd = ReceiveVote(bad, f"peer-{p}", now_ms=index)
            if p in out or m in out:
                assert rp.rejected(cmd), where
            else:
                rp.must(cmd)
        elif action == "Deadline":
            rp.must(CheckDeadline(TX, DEADLINE_NOW))
        elif action == "RemoveMember":
            (m,) = args
            rp.must(RemoveMember(m, "conformance", "operator removal"))
            if rp.state.tx is not None:
                rp.must(Reevaluate(TX))  # the shell re-evaluates open transactions
        elif action in ("Claim", "Sign", "Broadcast", "Confirm"):
            (s,) = args
            rev = pre["myRev"][s]
            fenced = pre["tx"] == "SUBMITTING" and rev == pre["subRev"]
            if action == "Claim":
                ok = pre["tx"] in ("THRESHOLD_REACHED", "SUBMITTING") and rev > pre["subRev"]
                cmd = StartSubmission(TX, s, rev)
            elif action == "Sign":
                ok = fenced and pre["signed"] == 0
                raw = post["myRaw"][s] if ok else 999
                cmd = RecordSigned(TX, rev, 31337, "0xsubmitter", raw, _hash(raw), "0x" + f"{raw:04x}" * 8)
            elif action == "Broadcast":
                ok = fenced
                cmd = RecordBroadcast(TX, rev, _hash(pre["myRaw"][s]))
            else:
                ok = fenced
                cmd = RecordConfirmed(TX, rev, _hash(pre["myRaw"][s]), 1)
            if ok:
                assert rp.must(cmd), f"{where}: the decider recorded nothing"
                stats[f"{action} appended"] += 1
            else:
                # A stale holder (fenced out), an aborted or finished transaction.
                assert rp.rejected(cmd), f"{where}: the decider accepted what the model fences out"
                stats[f"{action} refused"] += 1
        # Acquire, Crash, Recover, ExpireCrashedLease, ExpireLiveLease, ChainDown, ChainUp: no
        # decider command (etcd and the chain), the state must not move.

        got, want = rp.observe(), expected(post)
        assert got == want, f"{where}: decider and model disagree\n  decider {got}\n  model   {want}"
        if post["dec"] and not pre["dec"]:
            # The certificate, on the deciding step: the model's counted voters for the value.
            # The decider's ThresholdReached.voters lists every accepted vote for the value, so
            # a banned or removed member's vote may be listed beside them (it did not count
            # toward t: the quorum is checked above), never anything else.
            cert = {str(m) for m in post["cert"]}
            assert rp.voters is not None and cert <= rp.voters, where
            extra = rp.voters - cert
            assert extra <= {str(m) for m in post["banned"] | post["removed"]}, where
            assert len(cert) >= threshold, where
            if extra & {str(m) for m in post["banned"]}:
                stats["ThresholdReached.voters lists a banned voter"] += 1
            if extra & {str(m) for m in post["removed"]}:
                stats["ThresholdReached.voters lists a removed voter"] += 1
        pre = post
    stats[f"final {pre['tx']}"] += 1


@pytest.mark.parametrize(("cfg", "count", "length", "threshold", "floor"), TRACE_CONFIGS)
def test_decider_conforms_to_model(cfg, count, length, threshold, floor, record_property):
    traces = run_tlc.simulate_prints(
        cfg, "ThresholdVoteTrace.tla", count=count, depth=length + 1, seed=SEED, timeout=240
    )
    assert len(traces) == count
    stats: Counter = Counter()
    for trace in traces:
        replay_trace(trace, threshold, floor, stats)
    steps = sum(len(t[1]) - 1 for t in traces)
    print(f"\n{cfg}: {count} TLC traces, {steps} steps replayed through decide/evolve, seed {SEED}")
    for key, n in sorted(stats.items()):
        print(f"  {key:45s} {n}")
    record_property("traces", count)
    record_property("steps", steps)
    # The traces must reach the interesting places, or the agreement says little.
    assert stats["ReceiveVote"] and stats["ReceiveForged"] and stats["Deadline"]
    if cfg == "Trace_N4_T3_submit.cfg":
        for needed in ("final CONFIRMED", "Claim appended", "Claim refused", "Sign appended", "Confirm appended"):
            assert stats[needed] > 0, f"no trace covered {needed!r}: {stats}"
    else:
        for needed in ("final ABORTED_BYZANTINE", "final ABORTED_NO_QUORUM"):
            assert stats[needed] > 0, f"no trace covered {needed!r}: {stats}"


@pytest.mark.parametrize("bug", ["banned_vote_counts", "blame_claimed"])
def test_a_wrong_model_disagrees_with_the_decider(bug, tmp_path):
    """Non-vacuity of the comparison: with a deliberately wrong model the replay must fail."""
    cfg = (TLA_DIR / "Trace_N4_T3_submit.cfg").read_text()
    assert 'Bug = "none"' in cfg
    wrong = tmp_path / f"Trace_wrong_{bug}.cfg"
    wrong.write_text(cfg.replace('Bug = "none"', f'Bug = "{bug}"'))
    traces = run_tlc.simulate_prints(wrong, "ThresholdVoteTrace.tla", count=300, depth=41, seed=SEED, timeout=240)
    failures = 0
    for trace in traces:
        try:
            replay_trace(trace, 3, 1, Counter())
        except AssertionError:
            failures += 1
    print(f"\nmodel bug {bug!r}: {failures} of {len(traces)} traces disagree with the decider")
    assert failures > 0
