"""Trace validation: a real run's log (Postgres + etcd, through the Recorder and the decider) is a
behaviour of the TLA+ model (tla/ThresholdVoteTraceCheck.tla, run by tla/trace_check.py).

The run: N = 7, t = 4, seven transactions that between them reach consensus with a silent member,
get a double vote, a minority vote and a forged vote (each banned), a ban decided on one transaction
while another is open, a vote after the deadline, a transaction that expires without consensus, and
a claimed, signed, broadcast and confirmed submission.

Non-vacuity: the same log with a planted wrong step must be rejected, with the step named:
a NodeBanned with no violation behind it (inserted into the table, as anyone with the database role
could; and inside a real decision), and a ThresholdReached after t - 1 votes.
"""

from __future__ import annotations

import dataclasses

import pytest
from helpers import Writers, admin, forge_row, trustees
from tla_runner import trace_check

from events import rules
from events.model import Event, NodeBanned, ThresholdReached
from events.postgres_store import PostgresStore
from events.store import Recorded
from events.trace_export import export, read_log
from recording.etcd_guard import EtcdGuard

N, T = 7, 4
LATE = 10**9  # long after every deadline (votes are received at 1000, deadlines 30 s later)


def _hash(raw: int) -> str:
    return f"0x{raw:064x}"


def run_cluster(w: Writers) -> None:
    """The run (see the module docstring); every command through the real write path."""
    ts = trustees(N)
    honest, forger, minority, double = ts[:4], ts[4], ts[5], ts[6]
    w.execute(admin(ts, T)[1:])  # (the genesis operator is already admitted)
    # tx-a: consensus; node-5, node-6 and node-7 silent at the deadline; then submitted.
    w.execute([x.receive("tx-a", 11) for x in honest])
    w.execute([rules.CheckDeadline("tx-a", LATE)])
    w.execute([rules.StartSubmission("tx-a", "sub-1", 5), rules.RecordSigned("tx-a", 5, 31337, "0xsubmitter", 1,
                                                                             _hash(1), "0x" + "01" * 16)])
    w.execute([rules.RecordBroadcast("tx-a", 5, _hash(1)), rules.RecordConfirmed("tx-a", 5, _hash(1), 9)])
    # tx-b: node-6 votes against a consensus that forms: MINORITY_VOTE, banned, aborted.
    w.execute([x.receive("tx-b", 21) for x in honest] + [minority.receive("tx-b", 22)])
    # tx-c opens; meanwhile node-7 double votes on tx-d (banned there: an env step for tx-c).
    w.execute([x.receive("tx-c", 31) for x in honest[:2]])
    w.execute([double.receive("tx-d", 41), double.receive("tx-d", 42, ts=2)])
    w.execute([x.receive("tx-c", 31) for x in honest[2:]] + [forger.receive("tx-c", 31)])
    w.execute([rules.CheckDeadline("tx-c", LATE), rules.CheckDeadline("tx-d", LATE)])
    # tx-e: node-5 forges node-1's vote (INVALID_SIGNATURE, node-5 banned); consensus; a late vote.
    w.execute([forger.forge("node-1", "tx-e", 51)] + [x.receive("tx-e", 51) for x in honest[:3]])
    w.execute([rules.CheckDeadline("tx-e", LATE)])
    w.execute([honest[3].receive("tx-e", 51, now=LATE, ts=LATE)])
    # tx-f: two votes, then the deadline: expires, nobody blamed.
    w.execute([x.receive("tx-f", 61) for x in honest[:2]])
    w.execute([rules.CheckDeadline("tx-f", LATE)])


@pytest.fixture
def real_log(database, etcd_server, etcd_prefix) -> list[Recorded]:
    store = PostgresStore(database.app_dsn)
    w = Writers(store, trustees(N)[0],
                guard=lambda writer: EtcdGuard(etcd_server.endpoints[0], etcd_prefix, writer, lease_ttl=2))
    try:
        run_cluster(w)
    finally:
        w.close()
    return read_log(database.owner_dsn)


def plant(rows: list[Recorded], after: int, event: Event) -> list[Recorded]:
    """``event`` as a row right after ``rows[after]``, inside the same decision (it takes over the batch's
    signature if that row closed the batch); later positions move up by one."""
    prev = rows[after]
    new = dataclasses.replace(prev, event_type=event.TYPE, schema_version=event.VERSION, payload=event.to_payload(),
                              stream_id=event.stream, command=None, idempotency_key=event.key)
    rows = [*rows[:after], dataclasses.replace(prev, signature=None, signed_from=None), new, *rows[after + 1:]]
    return [dataclasses.replace(r, position=i) for i, r in enumerate(rows, 1)]


def _where(rows: list[Recorded], tx: str, event_type: str, nth: int = 1) -> int:
    hits = [i for i, r in enumerate(rows) if r.event_type == event_type and r.payload.get("tx_id") == tx]
    return hits[nth - 1]


def test_a_real_run_is_a_behaviour_of_the_model(real_log, record_property):
    ex = export(real_log)
    assert not ex.skipped(), ex.skipped()
    assert [t.tx_id for t in ex.checked] == ["tx-a", "tx-b", "tx-c", "tx-d", "tx-e", "tx-f"]
    kinds = {s["ev"] for t in ex.checked for s in t.steps}
    for needed in ("ThresholdReached", "DeadlinePassed", "TransactionAborted", "TransactionExpired",
                   "SubmissionConfirmed", "NodeBanned", "ReputationChanged"):
        assert needed in kinds
    assert any(s["k"] == "env" and s["ev"] == "NodeBanned" for s in ex.checked[2].steps), "tx-c saw no env ban"
    res = trace_check.check_rows(real_log)
    print("\n" + res.summary())
    record_property("events", res.events)
    record_property("steps", res.steps)
    record_property("distinct_states", res.distinct)
    record_property("tlc_seconds", round(res.tlc_seconds, 1))
    assert res.accepted, res.summary()
    assert res.steps == ex.steps and res.distinct == res.steps + 1


def test_a_consensus_with_t_minus_1_votes_is_rejected(real_log):
    # tx-a's third vote (t - 1 = 3) with a ThresholdReached in its decision.
    at = _where(real_log, "tx-a", "VoteAccepted", T - 1)
    bad = ThresholdReached("tx-a", 11, ("node-1", "node-2", "node-3"), "0x" + "00" * 32)
    res = trace_check.check_rows(plant(real_log, at, bad))
    print("\n" + res.summary())
    assert not res.accepted and res.failed_step is not None, res.summary()
    assert res.failed_step["ev"] == "ThresholdReached" and res.failed_step["tx"] == "tx-a"
    assert res.failed_step["pos"] == at + 2  # the planted row (positions from 1)


def test_a_ban_inside_a_decision_without_a_violation_is_rejected(real_log):
    # node-2's vote on tx-f, with a ban of node-2 beside it (it has done nothing wrong).
    at = _where(real_log, "tx-f", "VoteAccepted", 2)
    assert real_log[at].payload["node_id"] == "node-2"
    bad = NodeBanned("node-2", trustees(N)[1].peer_id, "DOUBLE_VOTING", "vote:tx-f:node-2:61")
    res = trace_check.check_rows(plant(real_log, at, bad))
    print("\n" + res.summary())
    assert not res.accepted and res.failed_step is not None, res.summary()
    assert res.failed_step["ev"] == "NodeBanned" and res.failed_step["node"] == "node-2"
    assert res.failed_step["tx"] == "tx-f"


def test_a_ban_inserted_into_the_table_is_rejected(database, real_log, tmp_path, capsys):
    # A row no decision wrote, appended to the real table (R13's void row): a ban of an honest member.
    pos = forge_row(database.owner_dsn, NodeBanned("node-3", trustees(N)[2].peer_id, "DOUBLE_VOTING", "none"),
                    "node-1")
    rows = read_log(database.owner_dsn)
    assert rows[-1].position == pos and rows[-1].command is None
    # the command line, as an operator would run it on a live log
    out = tmp_path / "run.ndjson"
    assert trace_check.main(["--dsn", database.owner_dsn, "--ndjson", str(out)]) == 1
    assert f'"pos": {pos}' in capsys.readouterr().out
    assert out.read_text().count("\n") == len(export(rows).ndjson().splitlines())
    res = trace_check.check_rows(rows)
    print("\n" + res.summary())
    assert not res.accepted and res.failed_step is not None, res.summary()
    assert res.failed_step["pos"] == pos and res.failed_step["ev"] == "NodeBanned"
    assert res.failed_step["k"] == "env" and res.failed_step["origin"] == "none"


def test_a_reward_off_by_one_milli_point_is_rejected(real_log):
    # tx-c's deadline rewards its voters (R9): one of them a milli-point more than the model's Reward.
    at = next(i for i, r in enumerate(real_log) if r.event_type == "ReputationChanged"
              and r.payload["reason"] == "PARTICIPATION" and r.payload["cause"] == "deadline:tx-c")
    row = real_log[at]
    payload = {**row.payload, "score": row.payload["score"] + 1, "delta": row.payload["delta"] + 1}
    res = trace_check.check_rows([*real_log[:at], dataclasses.replace(row, payload=payload), *real_log[at + 1:]])
    print("\n" + res.summary())
    assert not res.accepted and res.failed_step is not None, res.summary()
    assert res.failed_step["tx"] == "tx-c" and res.failed_step["last"]  # the end of the deadline's decision


def test_an_operator_removal_while_a_transaction_is_open_is_accepted():
    """RemoveMember (an env step of the open transaction) then the shell's Reevaluate: the settling half of
    the model's RemoveMember. Here the removal leaves no value able to reach t: ABORTED_NO_QUORUM.
    (The decider in memory: no I/O is needed for this path; the real write path is the tests above.)"""
    from events.memory_store import MemoryStore

    ts = trustees(5)
    store = MemoryStore()
    w = Writers(store, ts[0])
    w.execute(admin(ts, 3)[1:])
    # 1, 1, 2, 2: node-5 can still make either value reach t = 3, until it is removed.
    w.execute([ts[0].receive("tx-r", 1), ts[1].receive("tx-r", 1), ts[2].receive("tx-r", 2),
               ts[3].receive("tx-r", 2)])
    w.execute([rules.RemoveMember("node-5", "op", "decommissioned")])
    w.execute([rules.Reevaluate("tx-r")])
    rows = store.read_all(0, 10_000)
    assert [r.event_type for r in rows[-2:]] == ["MemberRemoved", "TransactionAborted"]
    ex = export(rows)
    (tr,) = ex.checked
    assert [(s["k"], s["ev"], s.get("origin")) for s in tr.steps[-2:]] == [
        ("env", "MemberRemoved", "RemoveMember"), ("own", "TransactionAborted", None)]
    res = trace_check.check_rows(rows)
    print("\n" + res.summary())
    assert res.accepted, res.summary()


def test_a_wrong_model_rejects_the_real_log(real_log):
    """Non-vacuity from the model's side: with ThresholdVote's "blame_claimed" bug (R7 broken: a forged vote
    blames the member it names, not the peer that sent it) the real log's forgery on tx-e no longer matches."""
    res = trace_check.check_rows(real_log, bug="blame_claimed")
    print("\n" + res.summary())
    assert not res.accepted and res.failed_step is not None, res.summary()
    assert res.failed_step["tx"] == "tx-e" and res.failed_step["last"]
