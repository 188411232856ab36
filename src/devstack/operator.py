"""The operator of a dev, test or ``up`` cluster: its key, the log's genesis, and its commands (R13).

Every log entry is signed by its writer; operator commands (admissions, configuration, unbans,
retention, writers) by an operator's key. A fresh log's first entry admits the first operator,
signed by itself. Here that operator is ``operator:devstack``, with a key file in the cluster's
directory; :func:`operate` runs commands as it (the genesis first, when the log has none).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from events import rules
from events.errors import StoreUnavailable
from events.postgres_store import PostgresStore
from events.writers import RowSigner, operator_writer
from node.p2p.identity import generate_key_file, load_seed
from recording.etcd_guard import EtcdGuard
from recording.recorder import Recorder, Result, Status
from submitter.identity import log_signer

NAME = "devstack"
Plan = Callable[[rules.Cluster], list[rules.Command]]


def operator_signer(base: Path, name: str = NAME) -> RowSigner:
    """The operator's signer, its key file created (mode 0600) in ``base`` on first use."""
    key = Path(base) / f"operator-{name}.key"
    if not key.exists():
        generate_key_file(key)
    return RowSigner.from_seed(operator_writer(name), load_seed(key))


def operate(dsn: str, etcd: str, prefix: str, signer: RowSigner, commands: list[rules.Command] | Plan,
            strict: bool = True, patience_s: float = 30.0) -> list[Result]:
    """Run operator commands as ``signer`` (after the log's genesis, if it has none yet).

    ``commands`` may be a plan: a function of the log's current state that returns the commands
    still needed (a restarted ``up`` admits only who is not admitted yet). A plan is retried for
    ``patience_s`` while Postgres or etcd cannot be reached: it is derived again from the log at each
    try, so a try whose append did land is not repeated. (A freshly started etcd may answer its own
    namespace's health probe a moment before this host can reach it.) A list is tried once: its
    outcome after a failure is the caller's to read.
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return _operate_once(dsn, etcd, prefix, signer, commands, strict)
        except StoreUnavailable:
            if not callable(commands) or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def _operate_once(dsn: str, etcd: str, prefix: str, signer: RowSigner, commands: list[rules.Command] | Plan,
                  strict: bool) -> list[Result]:
    store = PostgresStore(dsn)
    try:
        rec = Recorder(store, EtcdGuard(etcd, prefix, signer.writer), signer)
    except BaseException:
        store.close()
        raise
    try:
        rec.catch_up()
        if callable(commands):
            commands = commands(rec.ledger.cluster)
        if not commands:
            return []
        if signer.writer not in rec.ledger.cluster.writers:
            name = signer.writer.removeprefix(operator_writer(""))
            commands = [rules.AdmitWriter(signer.writer, "operator", signer.public_key, name), *commands]
        results = rec.execute(commands)
        bad = [r.error for r in results if r.status is Status.REJECTED]
        if strict and bad:
            raise RuntimeError(f"operator command refused: {bad[0]}")
        return results
    finally:
        rec.guard.close()
        rec.store.close()


def admit_submitter(dsn: str, etcd: str, prefix: str, signer: RowSigner, name: str, eth_private_key: str) -> None:
    """Admit a submitter's log key (the one ``python -m submitter`` derives from its Ethereum key)."""
    sub = log_signer(name, eth_private_key)
    operate(dsn, etcd, prefix, signer, lambda cluster: [] if sub.writer in cluster.writers else [
        rules.AdmitWriter(sub.writer, "submitter", sub.public_key, signer.writer.split(":", 1)[1])])
