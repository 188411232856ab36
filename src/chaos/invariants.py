"""After a chaos run: what must still hold, checked from the log, the projections and the chain.

Why a separate checker: a scenario that "passes" because nothing visibly broke proves little. The
checks here read the durable facts (the one cluster log, R13), compare every honest node's view with
them, rebuild the projections (R12) and count writes on chain (R11), so a fault that silently lost a
vote, split the nodes or wrote twice shows up as a named violation.

Checks (each one a row of the report):

- ``log_verifies``: ``audit verify`` (hash chain, every signature and ban's evidence);
- ``agreement``: every honest node's ``/tx`` view (status, value, voters) equals the log's fold;
- ``only_the_guilty`` (R14): no member outside the Byzantine set banned for anything, or charged with
  anything but real silence (SILENT_FAILURE on a consensus transaction it did not vote on in time);
- ``acked_votes_logged``: every vote an honest node's API acknowledged (202 + signed vote) is a
  ``VoteAccepted`` in the log;
- ``final_states``: every transaction is final (or THRESHOLD_REACHED / SUBMITTING when no submitter
  ran); offered transactions missing from the log count as lost;
- ``projection_matches_log`` and ``replay_digest``: tx_state agrees with the fold; replay equals live;
- ``chain_exactly_once`` (when a chain client is given): one ``Recorded`` per CONFIRMED transaction,
  none for aborted or expired ones, none for ids the log never decided; ``chain_matches_log``: the
  submitter's chain audit (each record carries the log's value and certificate hash).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from events import rules
from events.audit import verify
from events.follow import Follower
from events.postgres_store import PostgresStore
from events.vocab import ViolationKind
from projections.projector import Projector
from projections.replay import replay

NO_SUBMITTER_OK = frozenset({rules.THRESHOLD_REACHED})


class ChainView(Protocol):
    """The part of ``chain.ThresholdRecordClient`` the checker needs (a fake will do in unit tests)."""

    def recorded_events(self, tx_id: str | None = None, *, from_block: int = 0) -> list[Any]: ...


@dataclass(frozen=True)
class Ack:
    """A vote a node's API acknowledged: 202 with the signed vote in the body."""

    tx_id: str
    node_id: str
    value: int
    at: float = field(default=0.0, compare=False)  # monotonic time of the 202, to place it against a fault


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass
class InvariantReport:
    checks: list[Check] = field(default_factory=list)
    txs: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    votes_in_log: int = 0
    acked: int = 0
    votes_lost: int = 0
    txs_lost: int = 0
    floor_bans: list[str] = field(default_factory=list)
    byzantine_bans: dict[str, str] = field(default_factory=dict)
    lost_acks: list[Ack] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, problems: list[str], detail: str = "") -> None:
        self.checks.append(Check(name, not problems, detail, problems[:20]))

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "txs": self.txs, "statuses": self.statuses, "votes_in_log": self.votes_in_log,
                "acked": self.acked, "votes_lost": self.votes_lost, "txs_lost": self.txs_lost,
                "floor_bans": self.floor_bans, "byzantine_bans": self.byzantine_bans,
                "checks": {c.name: {"ok": c.ok, "detail": c.detail, "problems": c.problems} for c in self.checks}}

    def table(self, title: str = "invariants") -> Any:
        from rich.table import Table

        t = Table(title=title)
        for col in ("invariant", "held", "detail"):
            t.add_column(col)
        for c in self.checks:
            extra = "; ".join(c.problems[:3])
            detail = c.detail + (f" | {extra}" if extra else "")
            t.add_row(c.name, "[green]yes[/]" if c.ok else "[red]NO[/]", detail[:160])
        return t

    def print(self, title: str = "invariants") -> None:
        from rich.console import Console

        Console().print(self.table(title))


def read_log(dsn: str, times: dict[str, int] | None = None) -> tuple[rules.Ledger, list[Any]]:
    """Fold the whole log (paged) as an honest follower does (R13); also return every applied event, in order.

    ``times``, if given, is filled with each applied event's key -> when it was recorded (us since the epoch).
    """
    store = PostgresStore(dsn)
    follower, events = Follower(trust_own=False), []
    try:
        while True:
            rows = store.read_all(after=follower.read, limit=5000)
            for s in follower.feed(rows):
                if s.event is not None:
                    events.append(s.event)
                    if times is not None:
                        times[s.row.idempotency_key] = s.row.recorded_at_us
            if len(rows) < 5000:
                return follower.ledger, events
    finally:
        store.close()


def tx_view_of(tx: rules.Tx) -> dict[str, Any]:
    """The log's answer in the shape of a node's ``GET /tx`` view (without the deadline)."""
    return {"status": tx.status, "value": tx.value, "votes": {n: v.value for n, v in sorted(tx.votes.items())}}


@dataclass
class Run:
    """What the checks read: the log's fold and the test's own records of what it did."""

    dsn: str
    owner_dsn: str | None
    views: dict[str, dict[str, dict | None]]
    byzantine: set[str]
    acks: list[Ack]
    offered: set[str]
    chain: ChainView | None
    submitter: bool
    ledger: rules.Ledger
    events: list[Any]
    times: dict[str, int] = field(default_factory=dict)  # event key -> recorded at (us)

    @property
    def txs(self) -> dict[str, rules.Tx]:
        return self.ledger.txs


def check(
    dsn: str,
    owner_dsn: str | None = None,
    *,
    views: dict[str, dict[str, dict | None]] | None = None,
    byzantine: Iterable[str] = (),
    acked: Iterable[Ack] = (),
    offered: Iterable[str] = (),
    chain: ChainView | None = None,
    submitter: bool = False,
) -> InvariantReport:
    """Run every check; ``views`` is node_id -> tx_id -> that node's ``/tx`` answer (honest nodes only).

    ``owner_dsn`` (a role that may create schemas) enables the replay check; ``offered`` names the
    transactions the load driver started, so one that never reached the log counts as lost.
    """
    times: dict[str, int] = {}
    ledger, events = read_log(dsn, times)
    run = Run(dsn, owner_dsn, views or {}, set(byzantine), list(acked), set(offered), chain, submitter, ledger,
              events, times)
    rep = InvariantReport()
    rep.txs = len(run.txs)
    for tx in run.txs.values():
        rep.statuses[tx.status] = rep.statuses.get(tx.status, 0) + 1
    rep.votes_in_log = sum(len(tx.votes) for tx in run.txs.values())
    for named in CHECKS:
        named(run, rep)
    return rep


def log_verifies(run: Run, rep: InvariantReport) -> None:
    """``audit verify``: the hash chain, every signature and every ban's evidence."""
    store = PostgresStore(run.dsn)
    try:
        audit = verify(store)
    finally:
        store.close()
    rep.add("log_verifies", [f"@{f.position}: {f.problem}" for f in audit.integrity + audit.evidence],
            f"{audit.events} events")


def agreement(run: Run, rep: InvariantReport) -> None:
    """Each honest node's ``/tx`` view equals the log's fold."""
    problems = []
    compared = 0
    for node, per_tx in run.views.items():
        for tx_id, view in per_tx.items():
            compared += 1
            truth = run.txs.get(tx_id)
            if truth is None:
                if view is not None:
                    problems.append(f"{node} knows {tx_id}, the log does not")
                continue
            if view is None:
                problems.append(f"{node} does not know {tx_id} ({truth.status} in the log)")
                continue
            mine = {k: view.get(k) for k in ("status", "value", "votes")}
            if mine != tx_view_of(truth):
                problems.append(f"{node} {tx_id}: {mine} != log {tx_view_of(truth)}")
    rep.add("agreement", problems, f"{compared} node views compared over {len(run.views)} honest nodes")


def only_the_guilty(run: Run, rep: InvariantReport) -> None:
    """R14, with no exemption: no member outside the Byzantine set is banned, for any reason, or charged with
    anything but real silence: SILENT_FAILURE only on a transaction that reached consensus, and in force only
    if the member's vote is not in the log signed before the deadline (such a vote, however late it reached
    the log, withdraws the silence: R9's outage and partition clause)."""
    problems = []
    withdrawn = {(e.tx_id, e.node_id) for e in run.events if type(e).__name__ == "SilenceWithdrawn"}
    in_force = 0
    for e in run.events:
        name = type(e).__name__
        if name == "NodeBanned":
            (rep.floor_bans.append(e.node_id) if e.reason == rules.REPUTATION_FLOOR
             else rep.byzantine_bans.__setitem__(e.node_id, e.reason))
            if e.node_id not in run.byzantine:
                problems.append(f"honest {e.node_id} banned for {e.reason}")
        elif name == "ViolationDetected" and e.node_id not in run.byzantine:
            if e.kind != ViolationKind.SILENT_FAILURE:
                problems.append(f"honest {e.node_id} charged with {e.kind} on {e.tx_id}")
                continue
            tx = run.txs.get(e.tx_id)
            if tx is None or tx.value is None:
                problems.append(f"honest {e.node_id} charged silent on {e.tx_id}, which never reached consensus")
            elif (e.tx_id, e.node_id) in withdrawn:
                continue
            elif (v := tx.votes.get(e.node_id)) is not None and v.vote["timestamp_ms"] <= tx.deadline_at_ms:
                problems.append(f"honest {e.node_id} charged silent on {e.tx_id} though it signed its vote in time")
            else:
                in_force += 1
        elif name == "InvalidEntryReported" and e.writer in set(run.ledger.cluster.members) - run.byzantine:
            problems.append(f"honest {e.writer} reported for an invalid log entry at {e.position}")
    rep.add("only_the_guilty", problems,
            f"bans {rep.byzantine_bans or 'none'}; floor bans {sorted(set(rep.floor_bans)) or 'none'}; "
            f"{in_force} silences of honest members in force, each on a consensus tx they did not vote on in time; "
            f"{len(withdrawn)} withdrawn (signed in time, logged late)")


def acked_votes_logged(run: Run, rep: InvariantReport) -> None:
    """Every vote an honest node's API acknowledged is a ``VoteAccepted`` in the log."""
    logged = {(tx.tx_id, n, v.value) for tx in run.txs.values() for n, v in tx.votes.items()}
    honest_acks = [a for a in run.acks if a.node_id not in run.byzantine]
    rep.acked = len(honest_acks)
    missing = [a for a in honest_acks if (a.tx_id, a.node_id, a.value) not in logged]
    rep.votes_lost = len(missing)
    rep.lost_acks = missing
    rep.add("acked_votes_logged", [f"{a.tx_id}/{a.node_id}={a.value}" for a in missing],
            f"{len(honest_acks)} honest acks, {len(run.acks) - len(honest_acks)} byzantine acks not checked")


def final_states(run: Run, rep: InvariantReport) -> None:
    """Every transaction is final (or decided, when no submitter ran); an offered one missing is lost."""
    ok_states = rules.FINAL | (set() if run.submitter else NO_SUBMITTER_OK | {rules.SUBMITTING})
    problems = [f"{t.tx_id} {t.status}" for t in run.txs.values() if t.status not in ok_states]
    never = sorted(run.offered - run.txs.keys())
    problems += [f"{t} offered, not in the log" for t in never]
    rep.txs_lost = len(never) + sum(1 for t in run.txs.values() if t.tx_id in run.offered and t.status not in ok_states)
    rep.add("final_states", problems, ", ".join(f"{k}={v}" for k, v in sorted(rep.statuses.items())))


def projection_matches_log(run: Run, rep: InvariantReport) -> None:
    """``tx_state`` agrees with the log's fold once the projector caught up."""
    p = Projector(run.dsn)
    try:
        p.catch_up()
    finally:
        p.close()
    with psycopg.connect(run.dsn) as c:
        rows = dict(c.execute("SELECT tx_id, status FROM tx_state").fetchall())
    problems = [f"{t}: projection {rows.get(t)} != log {tx.status}"
                for t, tx in run.txs.items() if rows.get(t) != tx.status]
    problems += [f"{t} in projection only" for t in rows.keys() - run.txs.keys()]
    rep.add("projection_matches_log", problems, f"{len(rows)} tx_state rows")


def replay_digest(run: Run, rep: InvariantReport) -> None:
    """A replay from position 0 equals the live projections (R12); needs an owner DSN."""
    if run.owner_dsn:
        r = replay(run.owner_dsn)
        rep.add("replay_digest", [] if r.equal else [f"differing tables {r.differing_tables}"],
                f"{r.events} events replayed in {r.seconds:.2f}s")


def chain_exactly_once(run: Run, rep: InvariantReport) -> None:
    """One ``Recorded`` per CONFIRMED transaction, none for aborted or expired ones or ids never decided."""
    if run.chain is None:
        return
    counts: dict[str, int] = {}
    for ev in run.chain.recorded_events():
        counts[ev.tx_id] = counts.get(ev.tx_id, 0) + 1
    problems = []
    for t, tx in run.txs.items():
        n = counts.pop(t, 0)
        if tx.status == rules.CONFIRMED and n != 1:
            problems.append(f"{t} CONFIRMED with {n} chain writes")
        elif tx.status in (rules.ABORTED_BYZANTINE, rules.ABORTED_NO_QUORUM, rules.EXPIRED) and n:
            problems.append(f"{t} {tx.status} but written {n}x on chain")
        elif n > 1:
            problems.append(f"{t} {tx.status} written {n}x")
    problems += [f"{t} on chain, never decided in the log" for t in counts]
    rep.add("chain_exactly_once", problems, f"{sum(1 for t in run.txs.values() if t.status == rules.CONFIRMED)} "
            f"confirmed")


def chain_matches_log(run: Run, rep: InvariantReport) -> None:
    """The submitter's chain audit: each record carries the log's value and certificate hash."""
    if run.chain is None or not hasattr(run.chain, "address"):  # a real ThresholdRecordClient only
        return
    from submitter.audit import audit_chain

    store = PostgresStore(run.dsn)
    try:
        audit_c = audit_chain(store, run.chain)  # type: ignore[arg-type]
    finally:
        store.close()
    rep.add("chain_matches_log", audit_c.findings, f"{audit_c.checked} consensus txs audited on chain")


CHECKS = (log_verifies, agreement, only_the_guilty, acked_votes_logged, final_states, projection_matches_log,
          replay_digest, chain_exactly_once, chain_matches_log)
