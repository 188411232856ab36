"""Appends under a Postgres failover: a steady load that records every acknowledgement, and the log's check.

Used by the HA tests (tests/ha) and bench/chaos_bench.py's Patroni scenario. One recording writer (a
trustee's recorder, the real write path: etcd claim, then the Postgres append) records the votes of
``t`` trustees for one new transaction after another through one DSN, the multi-host DSN of a
Patroni cluster. A batch is acknowledged when ``Recorder.execute`` returns APPENDED or DUPLICATE for
every vote. When the store fails mid-operation (the primary died under the append) the same batch is
executed again, as a node retries: the votes' idempotency keys find what the dropped commit left in
the log, so a retried batch that had committed comes back DUPLICATE and one that had not is appended.

``check_log`` then reads the whole log and says what held: every acknowledged vote is in the log once,
positions are 1..n without a gap, idempotency keys are unique, and ``audit verify`` (chain, writer
signatures, every decision re-derived) finds nothing.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import nacl.signing

from events import rules
from events.audit import verify
from events.errors import StoreUnavailable
from events.identity import peer_id_of
from events.model import VoteAccepted
from events.postgres_store import COMMIT_BOUND_S, PostgresStore
from events.vote import Vote, sign
from events.writers import RowSigner, operator_writer
from recording.etcd_guard import EtcdGuard
from recording.recorder import Recorder, Status

OPERATOR = RowSigner(operator_writer("ha-op"), nacl.signing.SigningKey(b"\x2a" * 32))
OK = (Status.APPENDED, Status.DUPLICATE)


@dataclass(frozen=True)
class LoadTrustee:
    node_id: str
    key: nacl.signing.SigningKey

    @property
    def peer_id(self) -> str:
        return peer_id_of(bytes(self.key.verify_key))

    @property
    def signer(self) -> RowSigner:
        return RowSigner(self.node_id, self.key)

    def receive(self, tx_id: str, value: int) -> rules.ReceiveVote:
        return rules.ReceiveVote(sign(Vote(tx_id, value, self.node_id, 1), self.key), self.peer_id, 1000)


def load_trustees(n: int) -> list[LoadTrustee]:
    return [LoadTrustee(f"node-{i}", nacl.signing.SigningKey(bytes([0x40 + i]) * 32)) for i in range(1, n + 1)]


@dataclass
class Batch:
    tx_id: str
    acked_at: float = 0.0  # monotonic; 0 = never acknowledged
    retries: int = 0  # executions that failed on a dropped connection before the acknowledged one
    statuses: list[str] = field(default_factory=list)  # of the acknowledged execution


class AppendLoad:
    """Votes for new transactions, one batch after another, through ``dsn``; a thread of its own."""

    def __init__(self, dsn: str, etcd_endpoint: str, prefix: str, n: int = 4, t: int = 3,
                 pause_s: float = 0.0, commit_bound_s: float = COMMIT_BOUND_S) -> None:
        self.dsn, self.n, self.t, self.pause_s = dsn, n, t, pause_s
        self.trustees = load_trustees(n)
        guard = EtcdGuard(etcd_endpoint, prefix, self.trustees[0].node_id, lease_ttl=2)
        self.recorder = Recorder(PostgresStore(dsn, commit_bound_s=commit_bound_s), guard, self.trustees[0].signer)
        self.batches: list[Batch] = []
        self.errors: Counter[str] = Counter()
        self.unexpected: list[str] = []  # a status other than APPENDED/DUPLICATE: a finding
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="append-load", daemon=True)

    def found(self) -> None:
        """The log's first entries: the operator, the members, the threshold (R13)."""
        op = Recorder(self.recorder.store, self.recorder.guard, OPERATOR)
        cmds = [rules.AdmitWriter(OPERATOR.writer, "operator", OPERATOR.public_key, "ha-op"),
                *(rules.AdmitMember(x.node_id, bytes(x.key.verify_key), x.peer_id, "ha-op") for x in self.trustees),
                rules.Configure(self.t, "ha-op")]
        if any(r.status not in OK for r in op.execute(cmds)):
            raise RuntimeError("could not found the load's cluster in the log")
        self.recorder.catch_up()

    def start(self) -> AppendLoad:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started (a test may drive the recorder by hand)
            self._thread.join(timeout)
        self.recorder.guard.close()
        self.recorder.store.close()

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set():
            k += 1
            b = Batch(f"ha_{k:06d}")
            self.batches.append(b)
            cmds = [x.receive(b.tx_id, 1) for x in self.trustees[:self.t]]
            while True:  # this batch until it is acknowledged: a node never drops a vote it took
                try:
                    res = self.recorder.execute(cmds)
                except StoreUnavailable as e:
                    b.retries += 1
                    self.errors[str(e).split(":", 1)[0]] += 1
                    time.sleep(0.1)
                    continue
                b.statuses = [r.status.value for r in res]
                if any(r.status not in OK for r in res):
                    self.unexpected.append(f"{b.tx_id}: {b.statuses}")
                else:
                    b.acked_at = time.monotonic()
                break
            if self.pause_s:
                time.sleep(self.pause_s)

    # figures ---------------------------------------------------------------------------------------

    def acked(self) -> list[Batch]:
        return [b for b in self.batches if b.acked_at]

    def figures(self, fault_at: float) -> dict:
        """The longest stretch without an acknowledged append from just before the fault on, and the fault's
        recovery time: from ``fault_at`` to the first acknowledgement that ended that stretch."""
        times = sorted(b.acked_at for b in self.acked())
        window = [x for x in times if x > fault_at - 1.0]
        before = [x for x in times if x <= fault_at - 1.0]
        if before:
            window.insert(0, before[-1])
        gaps = [(b - a, b) for a, b in itertools.pairwise(window)]
        outage, resumed = max(gaps) if gaps else (float("nan"), None)
        retried = [b for b in self.acked() if b.retries]
        return {
            "acked_batches": len(times),
            "acked_votes": len(times) * self.t,
            "seconds_without_appends": round(outage, 2),
            "recovery_s": round(resumed - fault_at, 2) if resumed is not None else None,
            "retried_batches": len(retried),
            "retried_found_in_log": sum(all(s == "duplicate" for s in b.statuses) for b in retried),
            "retried_appended": sum(all(s == "appended" for s in b.statuses) for b in retried),
            "errors": dict(self.errors),
            "unexpected": list(self.unexpected),
        }


@dataclass
class LogCheck:
    events: int
    last_position: int
    gaps: list[int]  # positions missing from 1..last
    duplicate_keys: int
    lost: list[str]  # acknowledged votes not in the log: "tx/node"
    duplicated_votes: list[str]  # a vote accepted more than once
    audit_findings: list[str]

    @property
    def held(self) -> bool:
        return not (self.gaps or self.duplicate_keys or self.lost or self.duplicated_votes or self.audit_findings)


def check_log(dsn: str, load: AppendLoad) -> LogCheck:
    """Read the whole log (through ``dsn``) and check it against what ``load`` saw acknowledged."""
    store = PostgresStore(dsn)
    try:
        rows, after = [], 0
        while page := store.read_all(after, 5000):
            rows += page
            after = page[-1].position
        positions = [r.position for r in rows]
        last = positions[-1] if positions else 0
        gaps = sorted(set(range(1, last + 1)) - set(positions))
        keys = Counter(r.idempotency_key for r in rows)
        accepted = Counter(f"{e.tx_id}/{e.node_id}" for r in rows if isinstance(e := r.event(), VoteAccepted))
        want = [f"{b.tx_id}/{x.node_id}" for b in load.acked() for x in load.trustees[:load.t]]
        report = verify(store)
        findings = [f"{f.position}: {f.problem}" for f in (*report.integrity, *report.evidence)]
        return LogCheck(len(rows), last, gaps, sum(c - 1 for c in keys.values() if c > 1),
                        [w for w in want if accepted[w] == 0], [k for k, c in accepted.items() if c > 1], findings)
    finally:
        store.close()

