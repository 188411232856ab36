"""The log -> trace export for the TLA+ trace check (src/events/trace_export.py), without TLC or Postgres.

What the trace spec relies on: units cut where the log's commands and batch signatures say, a row no
command covers is a unit of its own (so the spec can refuse it), every event of a transaction's
decisions is a step, another transaction's ban of a member is an env step, and a transaction the
model cannot express is left out with its reason instead of being checked wrongly.
"""

from __future__ import annotations

import dataclasses
import json

from helpers import Writers, admin, trustees

from events import rules
from events.memory_store import MemoryStore
from events.trace_export import export, units_of

LATE = 10**9


def _log(commands_after_admin) -> list:
    ts = trustees(5)
    store = MemoryStore()
    w = Writers(store, ts[0])
    w.execute(admin(ts, 3)[1:])
    for batch in commands_after_admin(ts):
        w.execute(batch)
    return store.read_all(0, 10_000)


def test_units_follow_commands_and_every_event_is_a_step():
    rows = _log(lambda ts: [[x.receive("tx-1", 1000) for x in ts[:3]], [rules.CheckDeadline("tx-1", LATE)]])
    units = units_of(rows)
    assert all(u.command is not None for u in units)
    mine = [u for u in units if u.tx_id == "tx-1"]
    assert [u.command_type for u in mine] == ["ReceiveVote"] * 3 + ["CheckDeadline"]
    ex = export(rows)
    (tr,) = ex.checked
    assert [s["ev"] for s in tr.steps if s["k"] == "own"] == [
        e.TYPE for u in mine for e in u.events]
    assert [s["act"] for s in tr.steps if s.get("first")] == ["ReceiveVote"] * 3 + ["Deadline"]
    assert tr.params["t"] == 3 and tr.params["byz"] == [] and tr.params["vals"] == [1]  # 1000 renamed 1
    lines = [json.loads(x) for x in ex.ndjson().splitlines()]
    assert lines[0]["k"] == "begin" and len(lines) == ex.steps == len(tr.steps) + 1


def test_a_ban_decided_on_another_transaction_is_an_env_step():
    rows = _log(lambda ts: [[x.receive("tx-1", 1) for x in ts[:2]],
                            [ts[4].receive("tx-2", 1), ts[4].receive("tx-2", 2, ts=2)],
                            [ts[2].receive("tx-1", 1)]])
    ex = export(rows)
    tx1 = next(t for t in ex.checked if t.tx_id == "tx-1")
    env = [s for s in tx1.steps if s["k"] == "env"]
    assert [(s["ev"], s["node"], s["origin"]) for s in env] == [
        ("NodeBanned", "node-5", "tx"), ("ReputationChanged", "node-5", "tx")]
    assert next(t for t in ex.checked if t.tx_id == "tx-2").params["byz"] == ["node-5"]


def test_a_row_no_command_covers_is_a_unit_of_its_own():
    rows = _log(lambda ts: [[x.receive("tx-1", 1) for x in ts[:3]]])
    # the last row of a batch carries the signature; a row after it without a command is alone
    extra = dataclasses.replace(rows[-1], position=rows[-1].position + 1, command=None, signature=None)
    units = units_of([*rows, extra])
    assert units[-1].rows == [extra] and units[-1].command_type == "none"


def test_what_the_model_cannot_express_is_left_out_with_its_reason():
    extra = trustees(6)[5]
    rows = _log(lambda ts: [
        [x.receive("tx-admit", 1) for x in ts[:2]],
        [rules.AdmitMember(extra.node_id, extra.vote_key, extra.peer_id, "op")],
        [ts[2].receive("tx-admit", 1)],
        # consensus without node-5; the deadline charges its silence; its vote, signed in time, comes late
        [x.receive("tx-late", 1) for x in ts[:4]],
        [rules.CheckDeadline("tx-late", LATE)],
        [ts[4].receive("tx-late", 1, now=LATE, ts=1)],
    ])
    ex = export(rows)
    why = {t.tx_id: t.skipped for t in ex.traces}
    assert why["tx-admit"] is not None and "admitted" in why["tx-admit"]
    assert why["tx-late"] is not None and "withdrawn" in why["tx-late"]
    assert not ex.checked
