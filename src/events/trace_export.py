"""A run's log as a trace for the TLA+ model: one step per event, grouped by transaction (issue 16, item 4).

The model (tla/ThresholdVote.tla) is about ONE transaction; the log holds all of them, interleaved,
on top of the cluster stream they share. This module cuts the log into per-transaction traces that
tla/ThresholdVoteTraceCheck.tla replays through the model's own actions (tla/trace_check.py runs it):

- a ``begin`` step per transaction, with what the model takes as constants or initial state: the
  threshold and the reputation settings in force, the members (active when the transaction's first
  decision was made), their reputations, silent streaks and bans at that moment, and who the model
  should take for Byzantine (see below);
- an ``own`` step per event of every *unit* (one decision, R13: its first row carries the command)
  that belongs to the transaction, in log order; the unit's first step names the model action the
  command and its events stand for (``act``), its last step is where the trace spec compares the
  logged state with the model's;
- an ``env`` step per event of another unit that changes one of the transaction's members while it
  is open (a ban or a reputation change decided on another transaction, an operator's removal):
  what the model calls earlier transactions and operators. ``origin`` says which command wrote it,
  so the trace spec can refuse a change nothing may make (a ban in a unit with no command).

Nothing here judges the log: the mapping is mechanical (node ids stay node ids, values are renamed
to small integers in their order, lock revisions likewise), and the trace spec does the judging.

Who is Byzantine is not in the log (it is the environment's choice in the model). A member is
taken for Byzantine on a transaction if the log blames it for a Byzantine violation there, or its
accepted vote is not the transaction's honest value (the consensus value, else the most voted);
everyone else is honest, so the model's rule "an honest member signs only the honest value" holds
by construction. That weakens nothing the trace check is for: the decider's *reactions* (what it
accepts, whom it blames and bans, when it decides, aborts, expires) must still be the model's.

A transaction is left out, with the reason, where the model has no counterpart: a member admitted,
a member unbanned or the configuration changed while it is open (the model's membership and
threshold are constants), a silence withdrawn (R9's late-vote correction: the model waits for such
votes instead), or more Byzantine members than the model assumes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from events.model import (
    CLUSTER_STREAM,
    ClusterConfigured,
    DeadlinePassed,
    Event,
    MemberAdmitted,
    MemberRemoved,
    NodeBanned,
    NodeUnbanned,
    ReputationChanged,
    SilenceWithdrawn,
    SubmissionBroadcast,
    SubmissionConfirmed,
    SubmissionFailed,
    SubmissionSigned,
    SubmissionStarted,
    ThresholdReached,
    TransactionAborted,
    TransactionExpired,
    TransactionOpened,
    ViolationDetected,
    VoteAccepted,
)
from events.rules import FULL_REPUTATION, Cluster, State, evolve
from events.store import Recorded
from events.vocab import BYZANTINE_KINDS

# Events of another unit that change a member of an open transaction: the environment's steps.
ENV_EVENTS = (NodeBanned, ReputationChanged, MemberRemoved)
# Cluster changes the model has no counterpart for while a transaction is open.
UNMODELLED_ENV = {MemberAdmitted: "a member was admitted", NodeUnbanned: "a member was unbanned",
                  ClusterConfigured: "the configuration changed"}


@dataclass
class LogUnit:
    """One decision as the log holds it: its command (None for a row no command covers) and events."""

    index: int
    command: dict[str, Any] | None
    rows: list[Recorded]
    events: list[Event]

    @property
    def command_type(self) -> str:
        return str(self.command.get("type")) if isinstance(self.command, dict) else "none"

    @property
    def tx_id(self) -> str | None:
        for e in self.events:
            tx = getattr(e, "tx_id", None)
            if tx is not None:
                return tx
        tx = self.command.get("tx_id") if isinstance(self.command, dict) else None
        return tx if isinstance(tx, str) else None


@dataclass
class TxTrace:
    tx_id: str
    params: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None  # why the model cannot check it (None: it is checked)


@dataclass
class Export:
    traces: list[TxTrace]
    events: int  # events read
    units: int  # decisions read

    @property
    def checked(self) -> list[TxTrace]:
        return [t for t in self.traces if t.skipped is None]

    @property
    def steps(self) -> int:
        return sum(len(t.steps) + 1 for t in self.checked)  # + its begin step

    def ndjson(self) -> str:
        """One JSON object a line: each checked transaction's begin step, then its steps."""
        lines = []
        for n, t in enumerate(self.checked, 1):
            lines.append(json.dumps({"k": "begin", "txn": n, "tx": t.tx_id, "params": t.params}, sort_keys=True))
            lines.extend(json.dumps({"txn": n, **s}, sort_keys=True) for s in t.steps)
        return "\n".join(lines) + ("\n" if lines else "")

    def skipped(self) -> Counter[str]:
        return Counter(t.skipped for t in self.traces if t.skipped is not None)


def units_of(rows: Iterable[Recorded]) -> list[LogUnit]:
    """Cut the rows into units: a unit starts at a row that carries a command (R13), or after the row
    that closes a writer's batch (its signature), or at a row no command covers (e.g. one inserted by
    hand into the table: it is a unit of its own, with no command)."""
    units: list[LogUnit] = []
    closed = True
    for r in rows:
        if r.command is not None or closed:
            units.append(LogUnit(len(units), r.command, [], []))
        units[-1].rows.append(r)
        units[-1].events.append(r.event())
        closed = r.signature is not None
    return units


class _Ranks:
    """Order-preserving renaming of large integers (vote values, lock revisions) to 1, 2, ...: TLC's
    integers are 32-bit, and the model compares these only for equality and order."""

    def __init__(self, values: Iterable[int]) -> None:
        self.rank = {v: i for i, v in enumerate(sorted(set(values)), 1)}

    def __call__(self, v: int | None) -> int:
        return 0 if v is None else self.rank[v]


def _action(unit: LogUnit, value: _Ranks, rev: _Ranks) -> dict[str, Any]:
    """The model action a unit of the transaction stands for, with its arguments from the events."""
    kind = unit.command_type
    for e in unit.events:
        if kind == "ReceiveVote" and isinstance(e, VoteAccepted):
            return {"act": "ReceiveVote", "anode": e.node_id, "aval": value(e.value)}
        if kind == "ReceiveVote" and isinstance(e, ViolationDetected) and e.kind == "DOUBLE_VOTING":
            return {"act": "ReceiveVote", "anode": e.node_id, "aval": value(e.evidence["second"]["value"])}
        if kind == "ReceiveVote" and isinstance(e, ViolationDetected) and e.kind == "INVALID_SIGNATURE":
            return {"act": "ReceiveForged", "anode": e.node_id, "aarg": str(e.evidence.get("claimed_node", ""))}
        if isinstance(e, (SubmissionStarted, SubmissionSigned, SubmissionBroadcast, SubmissionConfirmed,
                          SubmissionFailed)):
            act = {"StartSubmission": "Claim", "RecordSigned": "Sign", "RecordBroadcast": "Broadcast",
                   "RecordConfirmed": "Confirm", "RecordFailed": "Failed"}.get(kind, "none")
            return {"act": act, "arev": rev(e.lock_revision)}
    act = {"CheckDeadline": "Deadline", "Reevaluate": "Resettle"}.get(kind, "none")
    return {"act": act}


def _step(e: Event, value: _Ranks, rev: _Ranks) -> dict[str, Any]:
    """What the trace spec folds into its picture of the logged state, per event."""
    s: dict[str, Any] = {"ev": e.TYPE}
    match e:
        case VoteAccepted():
            s |= {"node": e.node_id, "val": value(e.value)}
        case ViolationDetected():
            s |= {"node": e.node_id, "reason": e.kind}
        case NodeBanned():
            s |= {"node": e.node_id, "reason": e.reason}
        case ReputationChanged():
            s |= {"node": e.node_id, "score": e.score, "reason": e.reason}
        case MemberRemoved():
            s |= {"node": e.node_id}
        case ThresholdReached():
            s |= {"val": value(e.value), "voters": sorted(e.voters)}
        case TransactionAborted():
            s |= {"reason": e.reason}
        case SubmissionStarted() | SubmissionSigned() | SubmissionBroadcast() | SubmissionConfirmed() \
                | SubmissionFailed():
            s |= {"rev": rev(e.lock_revision)}
        case TransactionOpened() | DeadlinePassed() | TransactionExpired():
            pass
    return s


def _values_and_revisions(units: list[LogUnit]) -> tuple[_Ranks, _Ranks]:
    values: list[int] = []
    revs: list[int] = []
    for u in units:
        for e in u.events:
            if isinstance(e, (VoteAccepted, ThresholdReached)):
                values.append(e.value)
            elif isinstance(e, ViolationDetected) and e.kind == "DOUBLE_VOTING":
                values.append(e.evidence["second"]["value"])
            elif isinstance(e, (SubmissionStarted, SubmissionSigned, SubmissionBroadcast, SubmissionConfirmed,
                                SubmissionFailed)):
                revs.append(e.lock_revision)
    return _Ranks(values), _Ranks(revs)


def export(rows: Iterable[Recorded]) -> Export:
    """Per-transaction traces of a log (see the module docstring)."""
    units = units_of(rows)
    value, rev = _values_and_revisions(units)
    # The cluster as it stood before each unit (immutable states: sharing, not copies).
    before: list[Cluster] = []
    cluster = Cluster()
    for u in units:
        before.append(cluster)
        for e in u.events:
            if e.stream == CLUSTER_STREAM:
                cluster = evolve(State(cluster, None), e).cluster
    own: dict[str, list[int]] = {}
    for u in units:
        if u.tx_id is not None:
            own.setdefault(u.tx_id, []).append(u.index)
    # Units of no transaction that change a member (operators, and rows no command covers).
    # (Admissions and configuration changes outside every open transaction are simply part of the
    # state the next one starts from.)
    loose = [u.index for u in units if u.tx_id is None and any(isinstance(e, ENV_EVENTS) for e in u.events)]
    windows = {tx: (ix[0], ix[-1]) for tx, ix in own.items()}
    covered = {i for i in loose for lo, hi in windows.values() if lo < i < hi}
    extra: dict[str, list[int]] = {}  # loose units in no window: the next transaction's (else the last one's)
    order = sorted(windows, key=lambda tx: windows[tx][0])
    for i in loose:
        if i in covered:
            continue
        nxt = next((tx for tx in order if windows[tx][0] > i), None)
        if nxt is None and order:
            nxt = max(order, key=lambda tx: windows[tx][1])
        if nxt is not None:
            extra.setdefault(nxt, []).append(i)
    traces = [_trace(tx, units, before, own[tx], extra.get(tx, []), value, rev) for tx in order]
    return Export(traces, sum(len(u.events) for u in units), len(units))


def _trace(tx: str, units: list[LogUnit], before: list[Cluster], mine: list[int], extra: list[int],
           value: _Ranks, rev: _Ranks) -> TxTrace:
    out = TxTrace(tx)
    first, last = mine[0], mine[-1]
    cfg = before[first].config
    if cfg is None:
        out.skipped = "no configuration before it"
        return out
    members = {n: m for n, m in before[first].members.items() if m.active}
    start = min([first, *extra])
    at_start = before[start].members
    mine_set = set(mine)
    env = sorted({*extra, *(i for i in range(first + 1, last) if units[i].tx_id != tx
                            and any(isinstance(e, (*ENV_EVENTS, *UNMODELLED_ENV)) for e in units[i].events))})
    for i in sorted({*mine, *env}):
        u = units[i]
        if i in mine_set:
            evs = u.events
            if any(isinstance(e, SilenceWithdrawn) for e in evs):
                out.skipped = "a silence was withdrawn (R9's late vote: the model waits for it instead)"
                return out
            head = {"k": "own", "pos": u.rows[0].position, "cmd": u.command_type} | _action(u, value, rev)
            for j, (row, e) in enumerate(zip(u.rows, evs, strict=True)):
                step = {"k": "own", "pos": row.position, "first": j == 0, "last": j == len(evs) - 1}
                out.steps.append((head if j == 0 else {}) | step | _step(e, value, rev))
            continue
        origin = "tx" if u.tx_id is not None else u.command_type
        for row, e in zip(u.rows, u.events, strict=True):
            node = getattr(e, "node_id", None)
            if type(e) in UNMODELLED_ENV and first < i < last \
                    and (node is None or node in members or type(e) is MemberAdmitted):
                out.skipped = f"{UNMODELLED_ENV[type(e)]} while it was open (the model's are constants)"
                return out
            if isinstance(e, ENV_EVENTS) and node in members:
                out.steps.append({"k": "env", "pos": row.position, "origin": origin, "first": True, "last": True}
                                 | _step(e, value, rev))
    blamed = {s["node"] for s in out.steps if s["k"] == "own" and s["ev"] == "ViolationDetected"
              and s["reason"] in BYZANTINE_KINDS}
    accepted = {s["node"]: s["val"] for s in out.steps if s["k"] == "own" and s["ev"] == "VoteAccepted"}
    decided = [s["val"] for s in out.steps if s["k"] == "own" and s["ev"] == "ThresholdReached"]
    counts = Counter(accepted.values())
    honest_value = decided[0] if decided else (max(counts, key=lambda v: (counts[v], -v)) if counts else 1)
    byz = sorted(n for n in members if n in blamed or accepted.get(n, honest_value) != honest_value)
    values = {honest_value, *accepted.values(), *decided,
              *(s["aval"] for s in out.steps if s.get("act") == "ReceiveVote")}
    out.params = {
        "honest": sorted(set(members) - set(byz)),
        "byz": byz,
        "hv": honest_value,
        "vals": sorted(values),
        "t": cfg.threshold,
        "penalty": cfg.silent_penalty,
        "reward": cfg.participation_reward,
        "floor": cfg.reputation_floor,
        "fba": cfg.floor_ban_after,
        "rep": {n: at_start[n].reputation if n in at_start else FULL_REPUTATION for n in members},
        "streak": {n: at_start[n].silent_streak if n in at_start else 0 for n in members},
        "banned": sorted(n for n in members if n in at_start and at_start[n].banned),
    }
    if not (2 * cfg.threshold > len(members) and len(byz) < cfg.threshold <= len(members)):
        out.skipped = (f"outside the model's assumptions (N={len(members)}, t={cfg.threshold}, "
                       f"{len(byz)} Byzantine: the model needs 2t > N and fewer than t Byzantine)")
    return out


def read_log(dsn: str, page: int = 5000) -> list[Recorded]:
    """Every row of the log at ``dsn`` (Postgres), in order."""
    from events.postgres_store import PostgresStore

    store = PostgresStore(dsn)
    try:
        rows: list[Recorded] = []
        while batch := store.read_all(after=len(rows), limit=page):
            rows.extend(batch)
        return rows
    finally:
        store.close()
