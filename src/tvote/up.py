"""``tvote up``: the whole system on one machine, on loopback, running a real scenario.

Starts Postgres, a 3-member etcd, anvil with the ThresholdRecord contract, N trustee node
processes (real libp2p), the projector and the submitter; streams transactions through the
nodes' local APIs with one Byzantine trustee; shows progress; ends with a summary (verdicts,
values written on chain, bans with evidence, audit, replay digest) and where to look.
Everything it started is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from eth_account import Account
from rich.console import Console
from rich.live import Live
from rich.table import Table

from chain import ThresholdRecordClient, make_web3
from devstack.anvil import Anvil
from devstack.etcd import Etcd
from devstack.postgres import Postgres
from devstack.procs import die_with_parent
from devstack.trustees import SRC, TrusteeCluster
from events.vocab import FINAL
from tvote import db

CHAIN_ID = 31337


@dataclass
class UpOptions:
    nodes: int = 5
    threshold: int = 4
    transactions: int = 30
    byzantine: str = "minority"
    rate: float = 10.0  # transactions per second offered
    deadline_ms: int = 5000
    data_dir: Path | None = None
    keep_running: bool = False


@dataclass
class Stack:
    pg: Postgres
    etcd: Etcd
    anvil: Anvil | None = None
    client: ThresholdRecordClient | None = None
    cluster: TrusteeCluster | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)  # projector, submitter
    started: list = field(default_factory=list)

    def stop(self, keep_data: bool) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.cluster:
            self.cluster.stop()
        if self.anvil:
            self.anvil.stop()
        for s in reversed(self.started):
            s.stop() if keep_data else s.destroy()


def run(opts: UpOptions, console: Console) -> bool:
    data = opts.data_dir
    stack = Stack(Postgres(data / "postgres" if data else None), Etcd(size=3, base_dir=data / "etcd" if data else None))
    try:
        with console.status("starting Postgres and a 3-member etcd on 127.0.0.1 ..."):
            stack.pg.start()
            stack.started.append(stack.pg)
            stack.etcd.start()
            stack.started.append(stack.etcd)
            stack.pg.create_database("tvote")
            db.upgrade(stack.pg.url("tvote"))
        app_dsn, owner_dsn = stack.pg.dsn("tvote", user=db.APP_ROLE), stack.pg.dsn("tvote")
        console.print(f"[green]up[/green] postgres 127.0.0.1:{stack.pg.port}, etcd {' '.join(stack.etcd.endpoints)}")
        byz = {opts.nodes - 1: opts.byzantine} if opts.byzantine != "none" else {}
        with console.status(f"starting {opts.nodes} trustee nodes (libp2p on loopback) ..."):
            # every etcd member, so a node fails over when the one it talks to dies
            etcd_all = ",".join(stack.etcd.endpoints)
            stack.cluster = TrusteeCluster(opts.nodes, opts.threshold, app_dsn, etcd_all, "/tvote", byzantine=byz,
                                           base_dir=data / "nodes" if data else None,
                                           deadline_ms=opts.deadline_ms, die_with_parent=True)
            stack.cluster.start()
        base = Path(stack.cluster.base)
        with console.status("starting anvil and deploying ThresholdRecord ..."):
            stack.anvil = Anvil(log_path=base / "anvil.log")
            stack.anvil.start()
            owner, submitter = Account.from_key(stack.anvil.private_key(0)), Account.from_key(
                stack.anvil.private_key(1))
            stack.client = ThresholdRecordClient.deploy(make_web3(stack.anvil.url), owner, [submitter.address],
                                                        chain_id=CHAIN_ID)
            key_file = base / "submitter.key"
            key_file.write_text(stack.anvil.private_key(1))
            key_file.chmod(0o600)
            stack.cluster.admit_submitter("submitter-1", stack.anvil.private_key(1))  # its log key (R13)
        console.print(f"[green]up[/green] anvil {stack.anvil.url}, ThresholdRecord {stack.client.address}")
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        tvote = [sys.executable, "-c", "from tvote.cli import app; app()"]
        etcd_hostport = ",".join(e.removeprefix("http://") for e in stack.etcd.endpoints)  # failover, as the nodes
        for argv, log in (
            ([*tvote, "projector", "--dsn", app_dsn], "projector.log"),
            ([sys.executable, "-m", "submitter", "--dsn", app_dsn, "--etcd", etcd_hostport, "--etcd-prefix", "/tvote",
              "--rpc", stack.anvil.url, "--contract", stack.client.address, "--key-file", str(key_file),
              "--chain-id", str(CHAIN_ID), "--name", "submitter-1"], "submitter.log"),
        ):
            with open(base / log, "ab") as out:
                stack.procs.append(subprocess.Popen([*die_with_parent(), *argv], env=env, stdout=out,
                                                    stderr=subprocess.STDOUT))
        for t in stack.cluster.trustees:
            console.print(f"  {t.node_id} peer {t.peer_id[:20]}... api 127.0.0.1:{t.status['api_port']} "
                          f"(token {stack.cluster.token_file(t)})"
                          + (f" [red]byzantine: {t.byzantine}[/red]" if t.byzantine != "none" else ""))
        console.print(f"N={opts.nodes} t={opts.threshold} f={(opts.nodes - opts.threshold) // 2}, "
                      f"{opts.transactions} transactions at {opts.rate:g}/s")
        t0 = time.monotonic()
        _stream(stack.cluster, opts, app_dsn, console)
        console.print(f"all transactions settled in {time.monotonic() - t0:.1f}s")
        ok = _summary(app_dsn, owner_dsn, stack.cluster, stack.client, console)
        if opts.keep_running:
            console.print(f"services stay up; the service role: TVOTE_DSN=\"{app_dsn}\"; the owner (migrations, "
                          f"replay, backup): psql \"{owner_dsn}\"; the operator's key: "
                          f"{base / 'operator-devstack.key'}; Ctrl-C stops everything")
            while True:
                time.sleep(3600)
        return ok
    finally:
        with console.status("stopping everything ..."):
            stack.stop(keep_data=data is not None)


def _stream(cluster: TrusteeCluster, opts: UpOptions, dsn: str, console: Console) -> None:
    """Offer transactions at the chosen rate; every trustee votes the true value via its API."""
    txs = [f"tx_{k:04d}" for k in range(opts.transactions)]
    with Live(_progress_table(dsn, 0, len(txs)), console=console, refresh_per_second=4) as live:
        for k, tx in enumerate(txs):
            for i in range(len(cluster.trustees)):
                cluster.cast(i, tx, 1000 + k)
            live.update(_progress_table(dsn, k + 1, len(txs)))
            time.sleep(max(0.0, 1 / opts.rate))
        end = time.monotonic() + opts.deadline_ms / 1000 + 30
        while time.monotonic() < end:
            counts = _statuses(dsn)
            live.update(_progress_table(dsn, len(txs), len(txs)))
            settled = sum(v for k, v in counts.items() if k in FINAL)
            deadlines_done = _deadlines_fired(dsn) >= len(txs)
            if settled >= len(txs) and deadlines_done:
                return
            time.sleep(0.25)


def _statuses(dsn: str) -> Counter:
    with psycopg.connect(dsn) as c:
        return Counter(dict(c.execute("SELECT status, count(*) FROM tx_state GROUP BY status").fetchall()))


def _deadlines_fired(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM events WHERE event_type = 'DeadlinePassed'").fetchone()[0]


def _progress_table(dsn: str, offered: int, total: int) -> Table:
    t = Table(title=f"offered {offered}/{total} transactions (projected state)")
    t.add_column("status")
    t.add_column("count", justify="right")
    with contextlib.suppress(psycopg.Error):  # the projector may not have made its tables yet
        for k, v in sorted(_statuses(dsn).items()):
            t.add_row(k, str(v))
    return t


def _summary(app_dsn: str, owner_dsn: str, cluster: TrusteeCluster, client: ThresholdRecordClient,
             console: Console) -> bool:
    from events.audit import verify
    from events.postgres_store import PostgresStore
    from projections.replay import replay
    from submitter.audit import audit_chain
    from tvote.report import print_bans

    table = Table(title="verdicts (projections)")
    table.add_column("status")
    table.add_column("transactions", justify="right")
    for k, v in sorted(_statuses(app_dsn).items()):
        table.add_row(k, str(v))
    console.print(table)
    print_bans(app_dsn, console)
    drops: Counter = Counter()
    for i in range(len(cluster.trustees)):
        drops.update({k: v for k, v in cluster.counters(i).items() if k.startswith("dropped")})
    if drops:
        console.print("dropped at the edge (counted, never logged): "
                      + ", ".join(f"{k.removeprefix('dropped_')}={v}" for k, v in sorted(drops.items())))
    store = PostgresStore(app_dsn)
    report = verify(store)
    chain = audit_chain(store, client)
    store.close()
    verdict = "[green]each consensus written once[/green]" if not chain.findings else f"[red]{chain.findings}[/red]"
    console.print(f"on chain: {client.record_count()} values recorded by ThresholdRecord {client.address}; "
                  f"chain vs log: {verdict}")
    console.print(f"audit verify: {'[green]OK[/green]' if report.ok else '[red]FAILED[/red]'} "
                  f"({report.events} events, chain head {report.last_hash[:16]}...)")
    rep = replay(owner_dsn)
    verdict = "[green]equal[/green]" if rep.equal else "[red]DIFFERENT[/red]"
    console.print(f"replay: {rep.events} events in {rep.seconds:.2f}s, projections {verdict} "
                  f"(digest {rep.live_digest[:16]}...)")
    console.print(f"where to look: psql \"{owner_dsn}\"\n"
                  "  SELECT node_id, violation_type, tx_id, detected_at FROM byzantine_violations ORDER BY id;\n"
                  "  SELECT node_id, value, received_at FROM vote_history WHERE tx_id = 'tx_0000' ORDER BY position;\n"
                  "  node logs and keys: " + str(cluster.base))
    return report.ok and rep.equal and not chain.findings
