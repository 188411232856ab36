"""A hypothesis state machine driving the real append path: two nodes, real Postgres and etcd.

Steps deliver votes (honest, equivocating, repeated) to either node, tick deadlines, and
crash a node between its etcd CAS and its Postgres commit. After every step the log must
verify (chain and evidence), hold each vote once, and replay to the state the nodes hold.
At the end, after deferred votes are retried, no delivered vote is lost.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from helpers import OPERATOR, admin, trustees
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from events import errors, rules
from events.audit import verify
from events.model import CLUSTER_STREAM, tx_stream
from events.postgres_store import PostgresStore
from recording.etcd_guard import EtcdGuard
from recording.guard import Claim
from recording.recorder import Recorder, Status
from tvote import db

SERVERS: dict = {}
TS = trustees(4)  # the voters (some equivocate)
NODES = trustees(6)[4:]  # the two recording nodes: members that never vote, so never banned (R13 entitlement)
TXS = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def _servers(pg_server, etcd_server):
    SERVERS["pg"], SERVERS["etcd"] = pg_server, etcd_server


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        pg = SERVERS["pg"]
        self.dbname = f"sm_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.dbname}" TEMPLATE tvote_template')
        self.dsn = pg.dsn(self.dbname, user=db.APP_ROLE)
        self.prefix = f"/sm/{uuid.uuid4().hex[:8]}"
        op = Recorder(PostgresStore(self.dsn), EtcdGuard(SERVERS["etcd"].endpoints[0], self.prefix, "op"), OPERATOR)
        op.execute(admin([*TS, *NODES], 3, deadline_ms=1_000_000))
        op.guard.close()
        op.store.close()
        self.nodes = [self._node(i) for i in range(2)]
        self.delivered: list[tuple[str, str, int]] = []
        self.clock = 1

    def _node(self, i: int) -> Recorder:
        return Recorder(PostgresStore(self.dsn), EtcdGuard(SERVERS["etcd"].endpoints[0], self.prefix,
                                                            NODES[i].node_id, lease_ttl=2), NODES[i].signer)

    @rule(node=st.integers(0, 1), who=st.integers(0, 3), tx=st.sampled_from(TXS), value=st.integers(1, 2))
    def deliver(self, node: int, who: int, tx: str, value: int) -> None:
        self.clock += 1
        r = self.nodes[node].execute([TS[who].receive(tx, value, now=self.clock, ts=self.clock)])[0]
        if r.status is not Status.REJECTED:
            self.delivered.append((TS[who].node_id, tx, value))
        else:
            assert isinstance(r.error, errors.BannedSender), r.error

    @rule(node=st.integers(0, 1), tx=st.sampled_from(TXS))
    def deadline(self, node: int, tx: str) -> None:
        rec = self.nodes[node]
        rec.catch_up()
        if tx in rec.ledger.txs:
            rec.execute([rules.CheckDeadline(tx, 10**12)])

    @rule(node=st.integers(0, 1), who=st.integers(0, 3), tx=st.sampled_from(TXS), value=st.integers(1, 2))
    def crash_between_etcd_and_postgres(self, node: int, who: int, tx: str, value: int) -> None:
        """The node claims a decision in etcd, then dies before its Postgres commit."""
        rec = self.nodes[node]
        rec.catch_up()
        cmd = TS[who].receive(tx, value, now=self.clock, ts=self.clock)
        scratch = rules.Ledger()
        scratch.cluster, scratch.txs = rec.ledger.cluster, dict(rec.ledger.txs)
        try:
            decision = scratch.step(cmd)
        except errors.CommandRejected:
            return
        if decision.events:
            expected = {CLUSTER_STREAM: rec.versions.get(CLUSTER_STREAM, 0),
                        tx_stream(tx): rec.versions.get(tx_stream(tx), 0)}
            written: dict[str, int] = {}
            for e in decision.events:
                written[e.stream] = written.get(e.stream, 0) + 1
            rec.guard.claim([Claim.of(expected, written, decision.effects)])
        rec.guard.close()  # the process is gone: its lease (and its vote claims) end
        rec.store.close()
        self.nodes[node] = self._node(node)  # restarted

    @rule(node=st.integers(0, 1))
    def retry_deferred(self, node: int) -> None:
        self.nodes[node].retry_deferred()

    @invariant()
    def log_verifies_and_replays(self) -> None:
        store = self.nodes[0].store
        report = verify(store)
        assert report.ok, (report.integrity, report.evidence)
        rows = store.read_all(limit=10**6)
        keys = [r.idempotency_key for r in rows]
        assert len(keys) == len(set(keys))
        accepted = [(r.payload["tx_id"], r.payload["node_id"]) for r in rows if r.event_type == "VoteAccepted"]
        assert len(accepted) == len(set(accepted)), "a member has two accepted votes on one transaction"
        replayed = rules.Ledger()
        for r in rows:
            replayed.apply(r.event())
        for rec in self.nodes:
            rec.catch_up()
            assert rec.ledger.cluster == replayed.cluster
            assert rec.ledger.txs == replayed.txs

    def teardown(self) -> None:
        try:
            for rec in self.nodes:
                rec.retry_deferred()
            for rec in self.nodes:
                assert not rec.deferred, "a deferred vote was never recorded"
            log = self.nodes[0].store.read_all(limit=10**6)
            accepted = {(r.payload["node_id"], r.payload["tx_id"], r.payload["value"])
                        for r in log if r.event_type == "VoteAccepted"}
            doubles = {(r.payload["node_id"], r.payload["tx_id"]) for r in log
                       if r.event_type == "ViolationDetected" and r.payload["kind"] == "DOUBLE_VOTING"}
            for node_id, tx, value in self.delivered:
                assert (node_id, tx, value) in accepted or (node_id, tx) in doubles, \
                    f"vote {node_id}/{tx}/{value} was acknowledged but is not in the log"
        finally:
            for rec in self.nodes:
                rec.guard.close()
                rec.store.close()
            with psycopg.connect(SERVERS["pg"].dsn("postgres"), autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')


LogMachine.TestCase.settings = settings(max_examples=12, stateful_step_count=20, deadline=None)


class TestLogMachine(LogMachine.TestCase):
    pass


