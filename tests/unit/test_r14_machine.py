"""R14 as a state machine: whatever happens, only the guilty are banned and no honest trustee signs twice.

hypothesis interleaves, over the real decider, the real recording path (``Recorder`` + in-memory store and
guard), the real signing journal (``node.signer.Signer`` on disk) and the real follower:

- clients asking honest trustees to vote (and retrying, with the same or another value);
- gossip delivering, losing and delaying votes to each node's recorder;
- crashes (a node loses everything in memory; its journal and the log remain) and restarts;
- store outages (every append and read fails while it lasts) and a lagging view (a node that has not read);
- deadlines ticked by the logical clock, only after the log has been writable for the grace (node.service);
- a superuser editing a row behind the service's back (payload, writer or stream), then every node restarted;
- a Byzantine member (f = 1 of N = 5, t = 3) that opens transactions alone, equivocates, votes a minority
  value, forges votes in honest members' names (with its own envelope), stays silent, and signs false entries
  straight into the log.

After every step: no honest member banned or charged with anything but silence on a consensus transaction,
no honest key ever signed two values for one transaction, every honest node's view equals what a fresh
follower folds from the log, and the audit finds nothing but the Byzantine member's own void entries (and,
after an edit, names the edited rows).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from helpers import OPERATOR, admin, trustees
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from events import rules
from events.audit import verify
from events.commands import to_json
from events.errors import StoreUnavailable
from events.follow import Follower
from events.memory_store import MemoryStore
from events.model import NodeBanned
from events.store import Unit
from events.vocab import ViolationKind
from node.signer import Refused, Signed, Signer
from recording.memory_guard import MemoryGuard, MemoryKeys
from recording.recorder import Recorder

TS = trustees(5)
HONEST, BYZ = TS[:4], TS[4]
TXS = ["a", "b", "c", "d"]
DEADLINE_MS, GRACE_MS = 1000, 300


class FlakyStore:
    """The in-memory log, unreachable while ``down`` (a Postgres outage: every call fails, nothing lands)."""

    def __init__(self) -> None:
        self.inner, self.down = MemoryStore(), False

    def __getattr__(self, name: str):
        fn = getattr(self.inner, name)

        def call(*a, **kw):
            if self.down:
                raise StoreUnavailable("the log is down")
            return fn(*a, **kw)

        return call


class Node:
    def __init__(self, trustee, store: FlakyStore, keys: MemoryKeys, journal_dir: Path) -> None:
        self.t = trustee
        path = journal_dir / f"{trustee.node_id}.journal"
        self.signer = Signer.open(path, trustee.key, trustee.node_id, create=not path.exists())
        self.rec = Recorder(store, MemoryGuard(trustee.node_id, keys), trustee.signer)
        self.inbox: list[rules.ReceiveVote] = []
        self.up_since = 0  # logical ms: when this node last found the log writable after a failure

    def close(self) -> None:
        self.signer.close()


class R14Machine(RuleBasedStateMachine):
    @initialize()
    def found(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.store, self.keys, self.now = FlakyStore(), MemoryKeys(), 10_000
        Recorder(self.store, MemoryGuard("op", self.keys), OPERATOR).execute(
            admin(TS, 3, deadline_ms=DEADLINE_MS))
        self.nodes = [Node(t, self.store, self.keys, Path(self.dir.name)) for t in HONEST]
        self.byz = Recorder(self.store, MemoryGuard(BYZ.node_id, self.keys), BYZ.signer)
        self.signed: dict[tuple[str, str], int] = {}  # (honest node, tx) -> the one value it ever signed
        self.edited: set[int] = set()  # positions of rows a superuser edited

    # --- clients and gossip ---------------------------------------------------------------------------

    @rule(n=st.integers(0, 3), tx=st.sampled_from(TXS), value=st.integers(1, 2), reach=st.sets(st.integers(0, 3)))
    def client_asks(self, n: int, tx: str, value: int, reach: set[int]) -> None:
        """A client asks an honest trustee to vote (again, perhaps with another value); gossip reaches ``reach``."""
        node = self.nodes[n]
        (out,) = node.signer.sign_many([(tx, value)], self.now)
        if isinstance(out, Refused):
            assert out.earlier.vote.value == self.signed[(node.t.node_id, tx)] != value
            return
        assert isinstance(out, Signed)
        assert self.signed.setdefault((node.t.node_id, tx), out.vote.vote.value) == out.vote.vote.value
        cmd = rules.ReceiveVote(out.vote, node.t.peer_id, self.now)
        for i in {n, *reach}:
            self.nodes[i].inbox.append(cmd)

    @rule(n=st.integers(0, 3), k=st.integers(1, 5))
    def deliver(self, n: int, k: int) -> None:
        node = self.nodes[n]
        batch, node.inbox = node.inbox[:k], node.inbox[k:]
        try:
            node.rec.execute(batch)
        except StoreUnavailable:
            node.inbox = batch + node.inbox  # kept, never dropped (node.service._record)
            node.up_since = None

    @rule(n=st.integers(0, 3))
    def lose_a_message(self, n: int) -> None:
        if self.nodes[n].inbox:
            self.nodes[n].inbox.pop(0)

    # --- faults ---------------------------------------------------------------------------------------

    @rule(n=st.integers(0, 3))
    def crash_and_restart(self, n: int) -> None:
        old = self.nodes[n]
        old.close()
        self.nodes[n] = Node(old.t, self.store, self.keys, Path(self.dir.name))  # journal and log remain

    @rule(down=st.booleans())
    def outage(self, down: bool) -> None:
        self.store.down = down
        for node in self.nodes:
            node.up_since = None  # every node sees it (its next call fails or finds the log back)

    @rule(ms=st.sampled_from([100, 400, 1500]))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @rule(n=st.integers(0, 3), tx=st.sampled_from(TXS))
    def tick_deadline(self, n: int, tx: str) -> None:
        """node.service._tick_deadlines: only after the log has been writable for the grace; held votes first."""
        node = self.nodes[n]
        if self.store.down:
            node.up_since = None
            return
        if node.up_since is None:
            node.up_since = self.now
            return
        if self.now - node.up_since < GRACE_MS:
            return
        held = [c for c in node.inbox if c.tx_id == tx]
        node.inbox = [c for c in node.inbox if c.tx_id != tx]
        node.rec.catch_up()
        if tx in node.rec.ledger.txs:
            node.rec.execute([*held, rules.CheckDeadline(tx, self.now)])

    @rule(n=st.integers(0, 3))
    def report_faults(self, n: int) -> None:
        node = self.nodes[n]
        if self.store.down:
            return
        node.rec.catch_up()
        node.rec.execute([rules.ReportInvalidEntry(p, f.writer, f.reason)
                          for p, f in node.rec.ledger.cluster.faults.items() if f.writer != node.t.node_id])

    # --- the Byzantine member ---------------------------------------------------------------------------

    @rule(tx=st.sampled_from([*TXS, "lonely1", "lonely2"]), value=st.integers(1, 3), reach=st.sets(st.integers(0, 3)))
    def byzantine_votes(self, tx: str, value: int, reach: set[int]) -> None:
        """Any value, again and again: equivocation, minority votes, transactions nobody else votes on."""
        cmd = rules.ReceiveVote(BYZ.vote(tx, value, ts=self.now), BYZ.peer_id, self.now)
        for i in reach:
            self.nodes[i].inbox.append(cmd)

    @rule(tx=st.sampled_from(TXS), victim=st.integers(0, 3), reach=st.sets(st.integers(0, 3)))
    def byzantine_forges(self, tx: str, victim: int, reach: set[int]) -> None:
        cmd = BYZ.forge(HONEST[victim].node_id, tx, 2, now=self.now, ts=self.now)
        for i in reach:
            self.nodes[i].inbox.append(cmd)

    @rule(victim=st.integers(0, 3))
    @precondition(lambda self: not self.store.down)
    def byzantine_writes_a_false_entry(self, victim: int) -> None:
        """A ban of an honest member, signed by the Byzantine member's own key, straight into the log."""
        v = HONEST[victim]
        cluster = self.store.inner.stream_versions(["cluster"])["cluster"]
        cmd = rules.Reevaluate("a")
        self.store.inner.append([Unit.of({"cluster": cluster}, [NodeBanned(v.node_id, v.peer_id, "DOUBLE_VOTING",
                                                                            f"made-up-{self.now}")], to_json(cmd))],
                                BYZ.signer)

    # --- an operator with the database's superuser ------------------------------------------------------

    @rule(at=st.floats(0, 1), column=st.sampled_from(["payload", "writer", "stream_id"]))
    @precondition(lambda self: not self.store.down)
    def superuser_edits_a_row_then_every_node_restarts(self, at: float, column: str) -> None:
        """An edit behind the service's back (trigger off), then a restart of every node: nobody is blamed for it,
        and every node's view is still the log's (R14; docs/decisions.md, "Void, and whose fault")."""
        rows = self.store.inner._rows
        first = next((i for i, r in enumerate(rows) if r.writer != OPERATOR.writer), len(rows))  # after the admin
        if first >= len(rows):
            return
        i = first + int(at * (len(rows) - 1 - first))
        r = rows[i]
        if r.position in self.edited:
            return  # a second edit could put it back as it was
        rows[i] = {"payload": replace(r, payload={**r.payload, "edited": True}),
                   "writer": replace(r, writer=HONEST[0].node_id if r.writer != HONEST[0].node_id else BYZ.node_id),
                   "stream_id": replace(r, stream_id="cluster" if r.stream_id != "cluster" else "tx:a")}[column]
        self.edited.add(r.position)
        for n in range(len(self.nodes)):
            self.crash_and_restart(n)

    # --- what must hold -----------------------------------------------------------------------------------

    @invariant()
    def only_the_guilty(self) -> None:
        if self.store.down:
            return
        f = Follower(trust_own=False)
        settled = f.feed(self.store.inner.read_all(limit=10**6))
        honest = {t.node_id for t in HONEST}
        for s in settled:
            e = s.event
            if s.void is not None:
                assert s.void.writer == BYZ.node_id or not s.void.attributable, s.void  # only its own entries
                continue
            if isinstance(e, NodeBanned):
                assert e.node_id not in honest, f"honest {e.node_id} banned for {e.reason}"
            if type(e).__name__ == "ViolationDetected" and e.node_id in honest:
                assert e.kind == ViolationKind.SILENT_FAILURE, f"honest {e.node_id} charged with {e.kind}"
                assert f.ledger.txs[e.tx_id].value is not None, "silence charged on a tx without consensus"
            if type(e).__name__ == "InvalidEntryReported":
                assert e.writer not in honest
        for tx in f.ledger.txs.values():  # a silence in force never stands beside a vote signed in time (R9)
            for kind, n in tx.flagged:
                v = tx.votes.get(n)
                assert kind != ViolationKind.SILENT_FAILURE or v is None \
                    or v.vote["timestamp_ms"] > tx.deadline_at_ms, f"{n} silent on {tx.tx_id} but voted in time"
        for node in self.nodes:
            node.rec.catch_up()
            assert node.rec.ledger.txs == f.ledger.txs
            assert {n: m.banned for n, m in node.rec.ledger.cluster.members.items()} == {
                n: m.banned for n, m in f.ledger.cluster.members.items()}
        report = verify(self.store.inner)
        if self.edited:  # named, and what failed after it is nobody's fault (in report.integrity too)
            assert self.edited <= {x.position for x in report.integrity}, (self.edited, report.integrity)
        else:
            assert not report.integrity, report.integrity
        assert all(f"written as '{BYZ.node_id}'" in x.problem for x in report.evidence), report.evidence

    def teardown(self) -> None:
        for node in getattr(self, "nodes", []):
            node.close()
        if hasattr(self, "dir"):
            self.dir.cleanup()


R14Machine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


class TestR14(R14Machine.TestCase):
    pass
