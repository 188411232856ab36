"""Test helpers shared by unit and integration tests: deterministic trustees and their votes."""

from __future__ import annotations

import time
from dataclasses import dataclass

import nacl.signing

from events.envelope import build, vote_bytes
from events.identity import peer_id_of
from events.rules import AdmitMember, AdmitWriter, Configure, Ledger, ReceiveVote
from events.vote import SignedVote, Vote, sign
from events.writers import RowSigner, operator_writer, submitter_writer


@dataclass(frozen=True)
class Trustee:
    node_id: str
    key: nacl.signing.SigningKey
    peer_id: str

    @property
    def vote_key(self) -> bytes:
        return bytes(self.key.verify_key)

    @property
    def signer(self) -> RowSigner:
        """How this trustee's node signs the log (R13): as the member, with its vote key."""
        return RowSigner(self.node_id, self.key)

    def vote(self, tx_id: str, value: int, ts: int = 1) -> SignedVote:
        return sign(Vote(tx_id, value, self.node_id, ts), self.key)

    def receive(self, tx_id: str, value: int, now: int = 1000, ts: int = 1) -> ReceiveVote:
        return ReceiveVote(self.vote(tx_id, value, ts), self.peer_id, now)

    def forge(self, claimed: str, tx_id: str, value: int, now: int = 1000, ts: int = 1,
              envelope: bool = True) -> ReceiveVote:
        """A vote in ``claimed``'s name signed with our key, gossiped by us (R7): with our signed envelope."""
        v = Vote(tx_id, value, claimed, ts)
        sv = SignedVote(v, sign(v, self.key).signature)
        env = build(self.key, b'{"v":1,"votes":[' + vote_bytes(sv.to_json()) + b"]}", b"\0" * 8, "tvote/votes/1")
        return ReceiveVote(sv, self.peer_id, now, env if envelope else None)


def signer(name: str) -> RowSigner:
    """A writer's signer with a fixed key derived from its name (for tests that append rows directly)."""
    return RowSigner(name, nacl.signing.SigningKey(name.encode().ljust(32, b"\0")[:32]))


W = signer("w")  # a writer the log never admitted: its rows are void for every follower (R13)
OPERATOR = RowSigner(operator_writer("op"), nacl.signing.SigningKey(b"\x0f" * 32))  # the tests' operator "op"


def genesis() -> list:
    """The log's first entry: the operator "op" admits itself (R13)."""
    return [AdmitWriter(OPERATOR.writer, "operator", OPERATOR.public_key, "op")]


def admin(ts: list[Trustee], t: int, **config: int) -> list:
    """Operator commands that found a cluster of ``ts`` with threshold t (run them as OPERATOR)."""
    return [*genesis(), *(AdmitMember(x.node_id, x.vote_key, x.peer_id, "op") for x in ts),
            Configure(t, "op", **config)]


def trustees(n: int) -> list[Trustee]:
    """n trustees with fixed keys; each peer id derives from its key, as a real trustee's does (R1)."""
    keys = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(1, n + 1)]
    return [Trustee(f"node-{i}", k, peer_id_of(bytes(k.verify_key))) for i, k in enumerate(keys, 1)]


def bootstrap(n: int, t: int, **config: int) -> tuple[Ledger, list[Trustee]]:
    """A ledger with n admitted members and threshold t (commands decided and applied)."""
    ledger = Ledger()
    ts = trustees(n)
    for tr in ts:
        for e in ledger.decide(AdmitMember(tr.node_id, tr.vote_key, tr.peer_id, "op")):
            ledger.apply(e)
    for e in ledger.decide(Configure(t, "op", **config)):
        ledger.apply(e)
    return ledger, ts


def unstarted_node(tmp_path, ledger: Ledger):
    """Trustee node-1 (``trustees``' key) as a ``TrusteeNode`` never started: its recorder is only ``ledger``.

    For the node's pure-ish parts (the edge's validator, the API's waiters) without a host or a store.
    """
    from types import SimpleNamespace

    from node.p2p.identity import generate_key_file
    from node.service import NodeConfig, TrusteeNode

    key = tmp_path / "k"
    generate_key_file(key, seed=bytes([2]) * 32)
    node = TrusteeNode(NodeConfig("node-1", str(key), "dsn", "etcd"))
    node.recorder = SimpleNamespace(ledger=ledger)
    return node


def run(ledger: Ledger, command) -> list:
    events = ledger.decide(command)
    for e in events:
        ledger.apply(e)
    return events


def types(events) -> list[str]:
    return [e.TYPE for e in events]


SUBMITTER = RowSigner(submitter_writer("sub-1"), nacl.signing.SigningKey(b"\x0e" * 32))  # the tests' submitter


class Writers:
    """One log, every kind of writer it needs (R13), each command routed to the writer entitled to it.

    Operator commands go to ``operator:<command.operator>`` (admitted on first use by the genesis
    operator "op"), submission steps to ``submitter:<name>`` (admitted likewise), everything else to
    the trustee ``voter``'s node. ``execute``/``ledger``/``store`` read like one ``Recorder``'s.
    """

    def __init__(self, store, voter: Trustee | None = None, guard=None) -> None:
        from recording.memory_guard import MemoryGuard, MemoryKeys
        from recording.recorder import Recorder

        keys = MemoryKeys()
        self._make = lambda s: Recorder(store, guard(s.writer) if guard else MemoryGuard(s.writer, keys), s)
        self.store = store
        self.voter = voter or trustees(5)[0]
        self.op = self._make(OPERATOR)
        self.node = self._make(self.voter.signer)
        self.by_writer = {OPERATOR.writer: self.op, self.voter.signer.writer: self.node}
        self.op.execute(genesis())

    @property
    def ledger(self) -> Ledger:
        self.node.catch_up()
        return self.node.ledger

    @property
    def guard(self):
        return self.node.guard

    def recorder_for(self, cmd):
        from events import rules

        if isinstance(cmd, (rules.ReceiveVote, rules.CheckDeadline, rules.Reevaluate, rules.ReportInvalidEntry)):
            return self.node
        if isinstance(cmd, (rules.StartSubmission, rules.RecordSigned, rules.RecordBroadcast, rules.RecordConfirmed,
                            rules.RecordFailed)):
            name = getattr(cmd, "submitter", SUBMITTER.writer.removeprefix("submitter:"))
            return self._writer(submitter_writer(name), "submitter")
        return self._writer(operator_writer(cmd.operator), "operator")

    def _writer(self, writer: str, role: str):
        rec = self.by_writer.get(writer)
        if rec is None:
            s = SUBMITTER if writer == SUBMITTER.writer else signer(writer)
            self.op.execute([AdmitWriter(writer, role, s.public_key, "op")])
            rec = self.by_writer[writer] = self._make(s)
        return rec

    def execute(self, commands: list) -> list:
        """Consecutive commands for one writer go in one batch, as that writer's recorder would take them."""
        out: list = []
        run: list = []
        rec = None
        for cmd in commands:
            mine = self.recorder_for(cmd)
            if rec is not None and mine is not rec:
                out += rec.execute(run)
                run = []
            rec = mine
            run.append(cmd)
        if run:
            out += rec.execute(run)
        return out

    def catch_up(self) -> int:
        return self.node.catch_up()

    def close(self) -> None:
        for rec in self.by_writer.values():
            rec.guard.close()
        self.store.close()


def wait_for(pred, timeout: float, what: str):
    """``pred()``'s first truthy value, polled every 0.1 s; AssertionError naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def tla_tool(name: str):
    """A script of tla/ (``run_tlc``, ``trace_check``) as a module, for every suite that runs TLC (one loader)."""
    import importlib.util
    import sys
    from pathlib import Path

    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "tla" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def forge_row(dsn: str, event, writer: str) -> int:
    """INSERT a correctly chained row as the service role: what anyone holding the database role can do (R13).

    No writer signature covers it, so every follower finds it void; returns its position.
    """
    import psycopg

    from events.postgres_store import us_to_datetime
    from events.store import canonical_json, chain_hash

    with psycopg.connect(dsn) as c:
        pos, prev = c.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
        version = c.execute("SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = %s",
                            (event.stream,)).fetchone()[0] + 1
        now_us = time.time_ns() // 1000
        body = canonical_json(event.to_payload())
        h = chain_hash(bytes(prev), pos + 1, event.stream, version, event.TYPE, event.VERSION, body, now_us,
                       event.key, writer)
        c.execute("INSERT INTO events (position, stream_id, stream_version, event_type, schema_version, payload, "
                  "recorded_at, idempotency_key, writer, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s::jsonb, "
                  "%s, %s, %s, %s, %s)", (pos + 1, event.stream, version, event.TYPE, event.VERSION, body.decode(),
                                          us_to_datetime(now_us), event.key, writer, bytes(prev), h))
    return pos + 1
