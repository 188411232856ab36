"""Shared pieces of the submitter tests, in a module of their own (every test directory has a `conftest`).

`Chain` is one anvil with a deployed ThresholdRecord, `Cluster` one log whose trustees make consensus
the real way, `Proc` a `python -m submitter` process; `wait_until` and `all_confirmed` poll.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from helpers import Trustee, Writers

from chain import ThresholdRecordClient
from devstack.anvil import Anvil
from events import rules
from events.writers import RowSigner
from recording.recorder import Status
from submitter.identity import log_signer

REPO = Path(__file__).resolve().parents[2]
N, T = 3, 2


@dataclass
class Chain:
    node: Anvil
    client: ThresholdRecordClient
    key_file: Path
    sender: str

    def audit(self, cluster: Cluster) -> list[str]:
        """Findings of the chain-vs-log audit (empty: every record is a logged consensus, written once)."""
        from submitter.audit import audit_chain

        return audit_chain(cluster.recorder.store, self.client).findings

    def recorded(self) -> dict[str, int]:
        """tx_id -> number of successful writes on chain (the contract's Recorded events)."""
        counts: dict[str, int] = {}
        for ev in self.client.recorded_events():
            counts[ev.tx_id] = counts.get(ev.tx_id, 0) + 1
        return counts



@dataclass
class Cluster:
    """N trustees on one log; `consensus(tx_ids)` makes t of them vote the same value for each."""

    database: object
    etcd: str
    prefix: str
    recorder: Writers  # every writer the tests need: operator "op", a recording node, submitters
    members: list[Trustee] = field(default_factory=list)

    def admit_submitter(self, name: str, eth_private_key: str) -> RowSigner:
        """The submitter's log key, admitted by the operator (R13) unless it already is."""
        signer = log_signer(name, eth_private_key)
        self.recorder.op.catch_up()
        if signer.writer not in self.recorder.op.ledger.cluster.writers:
            r = self.recorder.op.execute([rules.AdmitWriter(signer.writer, "submitter", signer.public_key, "op")])
            assert r[0].status is Status.APPENDED, r
        return signer

    def consensus(self, tx_ids: list[str], value: int = 7) -> None:
        self.recorder.catch_up()
        eligible = [m for m in self.members if self.recorder.ledger.cluster.members[m.node_id].eligible]
        cmds = [m.receive(tx, value + i, now=int(time.time() * 1000)) for i, tx in enumerate(tx_ids)
                for m in eligible[:T]]
        results = self.recorder.execute(cmds)
        assert all(r.status is Status.APPENDED for r in results), results

    def execute(self, cmds: list[rules.Command]):
        return self.recorder.execute(cmds)

    def txs(self) -> dict[str, rules.Tx]:
        self.recorder.catch_up()
        return self.recorder.ledger.txs

    def events(self, type_: str | None = None) -> list:
        self.recorder.catch_up()
        out = []
        pos = 0
        while True:
            rows = self.recorder.store.read_all(after=pos, limit=5000)
            out += [r.event() for r in rows if type_ is None or r.event_type == type_]
            if len(rows) < 5000:
                return out
            pos = rows[-1].position



@dataclass
class Proc:
    popen: subprocess.Popen
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()



def wait_until(pred: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    detail = f"\n--- submitter output ---\n{proc.output()[-4000:]}" if proc else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


def all_confirmed(cluster: Cluster, tx_ids: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        txs = cluster.txs()
        return all(txs[t].status == rules.CONFIRMED for t in tx_ids)

    return check
