"""``tvote up``: the whole system on one machine, running a real scenario.

Starts Postgres, a 3-member etcd, anvil with the ThresholdRecord contract, N trustee node
processes (real libp2p), the projector and the submitter; streams transactions through the
nodes' local APIs with one Byzantine trustee; shows progress; ends with a summary (verdicts,
values written on chain, bans with evidence, gossip meshes, audit, replay digest) and where to
look. Everything it started is stopped on exit, Ctrl-C included.

Where the processes run is ``--network`` (tvote.placement): all on 127.0.0.1 (``loopback``, the
default), or each in a network namespace of its own with its own address (``netns``, root only),
the multi-host test network of devstack.netns, removed with everything in it when ``up`` ends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from eth_account import Account
from rich.console import Console
from rich.live import Live
from rich.table import Table
from web3.exceptions import TransactionNotFound

from chain import ThresholdRecordClient, make_web3
from devstack.anvil import Anvil
from devstack.etcd import Etcd, EtcdMember
from devstack.patroni import PatroniCluster
from devstack.postgres import Postgres
from devstack.procs import wait_until
from devstack.trustees import SRC, TrusteeCluster
from events.vocab import FINAL
from tvote import db, roles
from tvote.placement import ETCD, Placement, trustee_roles
from tvote.stackfile import StackFile, StackMismatch

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
    postgres: str = "embedded"  # or "patroni": three members with synchronous replication (devstack.patroni)
    network: str = "loopback"  # or "netns": each process on a host of its own (tvote.placement)


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
            self.cluster.destroy()  # keeps the nodes' directory when it is under --data-dir (not one it made)
        if self.anvil:
            self.anvil.stop()
        for s in reversed(self.started):
            s.stop() if keep_data else s.destroy()


def run(opts: UpOptions, console: Console) -> bool:
    """Start (or, on a data dir it ran on before, start again) the whole stack, stream a scenario, summarise.

    On ``--network netns`` the test network is built first, this thread enters its operator host
    before anything opens a socket, and the network goes last, whatever happened (tvote.placement)."""
    place = Placement(opts.network, opts.nodes)
    if place.isolated and opts.data_dir:
        raise StackMismatch("--data-dir works with --network loopback only: a test network's addresses are "
                            "new on every run, and etcd keeps its members' addresses in its data")
    with (console.status("building the test network (one namespace per process) ...") if place.isolated
          else contextlib.nullcontext()):
        place.open()
    try:
        with place.operating():
            return _run(opts, console, place)
    finally:
        if place.isolated:
            with console.status("removing the test network ..."):
                place.close()
            console.print(f"test network {place.net.run_id} removed (namespaces, veths, bridge, rules, processes)")


def _place(place: Placement, role: str) -> roles.Place:
    """A process on a host of its own listens as in deploy/ (every interface, well-known ports); on loopback
    it has no metrics endpoint (they would collide)."""
    return roles.Place.own_host(place.ip(role)) if place.isolated else roles.Place.loopback()


def service_processes(place: Placement, dsn: str, etcd: str, rpc: str, contract: str,
                      key_file: str) -> dict[str, roles.Process]:
    """The projector and the submitter as ``up`` starts them (tvote.roles: what deploy/ is checked against)."""
    return {"projector": roles.projector(_place(place, "projector"), dsn),
            "submitter": roles.submitter(_place(place, "submitter"), dsn, etcd, rpc, contract, str(CHAIN_ID),
                                         key_file, "submitter-1")}


def _wait_healthy(role: str, ip: str, health: tuple[int, str], procs: list[subprocess.Popen], log: Path,
                  timeout: float = 60.0) -> None:
    """Wait for ``GET http://ip:port/path`` to answer 2xx, as the compose health check does; say why not."""
    url = f"http://{ip}:{health[0]}{health[1]}"

    def ok() -> bool:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{role} exited: {log.read_text()[-1500:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return 200 <= r.status < 300
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    wait_until(ok, timeout, f"{role} healthy at {url}")


def _run(opts: UpOptions, console: Console, place: Placement) -> bool:
    data = opts.data_dir
    if opts.postgres == "patroni" and data:
        raise StackMismatch("--postgres patroni keeps no data dir yet: run it without --data-dir")
    if opts.postgres == "patroni" and place.isolated:
        raise StackMismatch("--postgres patroni runs on --network loopback only (not built on the test network yet)")
    if data:
        data.mkdir(parents=True, exist_ok=True)
    state = StackFile.load(data) if data else None  # StackMismatch (a one-line error) before anything starts
    if state:
        state.check(opts.nodes, opts.threshold)
    pg = Postgres(data / "postgres" if data else None, port=state.pg_port if state else None, host=place.ip("pg"),
                  prefix=place.ns_prefix("pg"))
    etcd = Etcd(size=3, base_dir=data / "etcd" if data else None,
                members=[EtcdMember(n, cp, pp, data / "etcd" / n) for n, cp, pp in state.etcd] if state else [],
                hosts=[place.ip(e) for e in ETCD] if place.isolated else None,
                prefixes=[place.prefix(e) for e in ETCD])  # killed with us: no etcd left after a crash of `up`
    if data and not state:  # the ports are fixed from the first start on (etcd keeps its peer URLs)
        state = StackFile(opts.nodes, opts.threshold, pg.port, [[m.name, m.client_port, m.peer_port]
                                                                 for m in etcd.members])
        state.save(data)
    if opts.postgres == "patroni":  # Patroni's keys beside the service's "/tvote" (refused if they overlap)
        pg = PatroniCluster(etcd.endpoints, die_with_parent=True)  # type: ignore[assignment]
    stack = Stack(pg, etcd)
    try:
        with console.status(f"starting Postgres and a 3-member etcd {place.describe()} ..."):
            stack.pg.stop()  # a server an earlier `up` on this data dir left running (pg_ctl daemonizes it)
            # Patroni keeps its leader key in etcd: etcd first
            for server in (stack.etcd, stack.pg) if opts.postgres == "patroni" else (stack.pg, stack.etcd):
                stack.started.append(server)
                server.start()
            stack.pg.create_database("tvote")
            db.upgrade(stack.pg.url("tvote"))
        app_dsn, owner_dsn = stack.pg.dsn("tvote", user=db.APP_ROLE), stack.pg.dsn("tvote")
        if place.isolated:
            console.print(f"[green]up[/green] {place.describe().removeprefix('on ')}; this harness is the operator "
                          f"host {place.ip('operator')}")
        console.print(f"[green]up[/green] postgres {stack.pg.host}:{stack.pg.port}, "
                      f"etcd {' '.join(stack.etcd.endpoints)}"
                      + (f" (data dir {data}, start {state.runs + 1})" if state else ""))
        if isinstance(stack.pg, PatroniCluster):
            console.print(f"  patroni {stack.pg.roles()}, every role through \"{app_dsn}\"")
        byz = {opts.nodes - 1: opts.byzantine} if opts.byzantine != "none" else {}
        with console.status(f"starting {opts.nodes} trustee nodes (libp2p {place.describe()}) ..."):
            # every etcd member, so a node fails over when the one it talks to dies
            etcd_all = ",".join(stack.etcd.endpoints)
            stack.cluster = TrusteeCluster(opts.nodes, opts.threshold, app_dsn, etcd_all, "/tvote", byzantine=byz,
                                           base_dir=data / "nodes" if data else None,
                                           deadline_ms=opts.deadline_ms, die_with_parent=True,
                                           hosts=place.hosts(trustee_roles(opts.nodes)))
            for t in stack.cluster.trustees:  # a restart keeps every address: peers and clients know them
                if state and (ports := state.trustees.get(t.node_id)):
                    t.status = {"api_port": ports["api_port"],
                                "listen_addrs": [f"/ip4/127.0.0.1/tcp/{ports['listen_port']}/p2p/{t.peer_id}"]}
            stack.cluster.start()
            if state:
                state.trustees = {t.node_id: {"api_port": t.status["api_port"], "listen_port": int(
                    t.status["listen_addrs"][0].split("/tcp/")[1].split("/")[0])} for t in stack.cluster.trustees}
                state.save(data)
        base = Path(stack.cluster.base)
        with console.status("starting anvil and the ThresholdRecord contract ..."):
            stack.anvil = Anvil(log_path=base / "anvil.log", port=state.anvil_port if state else None,
                                state_path=data / "anvil.json" if data else None,
                                state_interval=1 if data else None, host=place.ip("anvil"),
                                prefix=place.prefix("anvil"))  # SIGTERM (it dumps its state) if `up` dies mid-stop
            stack.anvil.start()
            owner, submitter = Account.from_key(stack.anvil.private_key(0)), Account.from_key(
                stack.anvil.private_key(1))
            w3 = make_web3(stack.anvil.url)
            if state and state.contract:
                if not w3.eth.get_code(state.contract):
                    raise StackMismatch(f"anvil's chain ({data / 'anvil.json'}) has no contract at {state.contract}, "
                                        "which this cluster's log writes to: the chain state is missing or from "
                                        "another run; nothing was started on it")
                _check_chain_holds_the_log(w3, owner_dsn, data / "anvil.json")
                stack.client = ThresholdRecordClient(w3, state.contract, chain_id=CHAIN_ID)
            else:
                stack.client = ThresholdRecordClient.deploy(w3, owner, [submitter.address], chain_id=CHAIN_ID)
            if state:
                state.anvil_port, state.contract = stack.anvil.port, stack.client.address
                state.save(data)
            key_file = base / "submitter.key"
            key_file.write_text(stack.anvil.private_key(1))
            key_file.chmod(0o600)
            stack.cluster.admit_submitter("submitter-1", stack.anvil.private_key(1))  # its log key (R13)
        console.print(f"[green]up[/green] anvil {stack.anvil.url}, ThresholdRecord {stack.client.address}")
        etcd_hostport = ",".join(e.removeprefix("http://") for e in stack.etcd.endpoints)  # failover, as the nodes
        programs = {roles.TVOTE: [sys.executable, "-c", "from tvote.cli import app; app()"],
                    roles.SUBMITTER: [sys.executable, "-m", "submitter"]}
        services = service_processes(place, app_dsn, etcd_hostport, stack.anvil.url, stack.client.address,
                                     str(key_file))
        for role, spec in services.items():
            env = {**os.environ, **spec.env, "PYTHONPATH": str(SRC)}
            with open(base / f"{role}.log", "ab") as out:
                stack.procs.append(subprocess.Popen([*place.prefix(role), *programs[spec.program], *spec.args],
                                                    env=env, stdout=out, stderr=subprocess.STDOUT))
        for t in stack.cluster.trustees:
            libp2p = f" libp2p {t.status['listen_addrs'][0].split('/p2p/')[0]}" if place.isolated else ""
            console.print(f"  {t.node_id} peer {t.peer_id[:20]}...{libp2p} api "
                          f"{'https' if t.status.get('api_tls') else 'http'}://{stack.cluster.api_host(t)}"
                          f":{t.status['api_port']} (token {stack.cluster.token_file(t)})"
                          + (f" [red]byzantine: {t.byzantine}[/red]" if t.byzantine != "none" else ""))
        if place.isolated:
            console.print(f"  projector {place.ip('projector')} (reads and projects the log at "
                          f"{stack.pg.host}:{stack.pg.port})")
            console.print(f"  submitter {place.ip('submitter')} (etcd {etcd_hostport}, chain {stack.anvil.url})")
        console.print(f"N={opts.nodes} t={opts.threshold} f={(opts.nodes - opts.threshold) // 2}, "
                      f"{opts.transactions} transactions at {opts.rate:g}/s")
        t0 = time.monotonic()
        prefix = f"r{state.runs + 1}_" if state else ""  # a restart's transactions are new ones
        _stream(stack.cluster, opts, app_dsn, console, prefix)
        console.print(f"all transactions settled in {time.monotonic() - t0:.1f}s")
        for role, spec in services.items():  # the compose file's health check, where there is an endpoint
            if spec.health is not None:  # (after the run: the stream starts as soon as the roles are spawned)
                _wait_healthy(role, place.ip(role), spec.health, stack.procs, base / f"{role}.log")
                console.print(f"  {role} healthy at http://{place.ip(role)}:{spec.health[0]}{spec.health[1]}")
        ok = _summary(app_dsn, owner_dsn, stack.cluster, stack.client, console, f"{prefix}tx_0000", place)
        if state:
            state.runs += 1
            state.save(data)
        if opts.keep_running:
            console.print(f"services stay up; the service role: TVOTE_DSN=\"{app_dsn}\"; the owner (migrations, "
                          f"replay, backup): {place.shell()}psql \"{owner_dsn}\"; the operator's key: "
                          f"{base / 'operator-devstack.key'}; Ctrl-C stops everything"
                          + (f"; `tvote up --data-dir {data}` starts it again on the same data" if data else ""))
            while True:
                time.sleep(3600)
        return ok
    finally:
        with console.status("stopping everything ..."):
            stack.stop(keep_data=data is not None)


def _check_chain_holds_the_log(w3, dsn: str, state_file: Path) -> None:
    """A kept chain must hold what the log says was confirmed on it: an anvil state file older than the log
    (restored from an old copy, or the last second's dump lost) would leave consensus values the log calls
    CONFIRMED missing from the chain, and the submitter would never write them again. The log's newest
    confirmation is enough: the chain only grows, so it holds every older one if it holds that one."""
    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT payload->>'tx_id', payload->>'tx_hash', (payload->>'block_number')::bigint FROM events "
                        "WHERE event_type = 'SubmissionConfirmed' ORDER BY position DESC LIMIT 1").fetchone()
    if row is None:
        return
    tx_id, tx_hash, block = row
    try:
        receipt = w3.eth.get_transaction_receipt(tx_hash)
    except TransactionNotFound:  # the chain never saw it
        receipt = None
    if receipt is None or receipt["blockNumber"] != block:
        raise StackMismatch(f"anvil's chain ({state_file}) lacks the log's last confirmed record ({tx_id}: "
                            f"{tx_hash} in block {block}): the chain state is older than the log; nothing was "
                            "started on it")


def _stream(cluster: TrusteeCluster, opts: UpOptions, dsn: str, console: Console, prefix: str = "") -> None:
    """Offer transactions at the chosen rate; every trustee votes the true value via its API."""
    txs = [f"{prefix}tx_{k:04d}" for k in range(opts.transactions)]
    with Live(_progress_table(dsn, 0, len(txs)), console=console, refresh_per_second=4) as live:
        for k, tx in enumerate(txs):
            for i in range(len(cluster.trustees)):
                cluster.cast(i, tx, 1000 + k)
            live.update(_progress_table(dsn, k + 1, len(txs)))
            time.sleep(max(0.0, 1 / opts.rate))
        end = time.monotonic() + opts.deadline_ms / 1000 + 30
        while time.monotonic() < end:
            counts = _statuses(dsn, prefix)
            live.update(_progress_table(dsn, len(txs), len(txs)))
            settled = sum(v for k, v in counts.items() if k in FINAL)
            deadlines_done = _deadlines_fired(dsn, prefix) >= len(txs)
            if settled >= len(txs) and deadlines_done:
                return
            time.sleep(0.25)


def _statuses(dsn: str, prefix: str = "") -> Counter:
    with psycopg.connect(dsn) as c:
        return Counter(dict(c.execute("SELECT status, count(*) FROM tx_state WHERE starts_with(tx_id, %s) "
                                      "GROUP BY status", (prefix,)).fetchall()))


def _deadlines_fired(dsn: str, prefix: str = "") -> int:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM events WHERE event_type = 'DeadlinePassed' "
                         "AND starts_with(stream_id, %s)", ("tx:" + prefix,)).fetchone()[0]


def _progress_table(dsn: str, offered: int, total: int) -> Table:
    t = Table(title=f"offered {offered}/{total} transactions (projected state)")
    t.add_column("status")
    t.add_column("count", justify="right")
    with contextlib.suppress(psycopg.Error):  # the projector may not have made its tables yet
        for k, v in sorted(_statuses(dsn).items()):
            t.add_row(k, str(v))
    return t


def _summary(app_dsn: str, owner_dsn: str, cluster: TrusteeCluster, client: ThresholdRecordClient,
             console: Console, first_tx: str, place: Placement | None = None) -> bool:
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
    meshes, eclipse = [], set()
    for i, t in enumerate(cluster.trustees):
        counters = cluster.counters(i)
        drops.update({k: v for k, v in counters.items() if k.startswith("dropped")})
        if "gossip_mesh_peers" in counters:
            meshes.append(f"{t.node_id} {counters['gossip_mesh_peers']}")
            eclipse.add(counters["gossip_eclipse_protection"])
    if meshes:
        rules = {frozenset({1}): "on", frozenset({0}): "off"}.get(frozenset(eclipse), "mixed")
        why = "each peer has an address of its own" if place and place.isolated else "every peer shares 127.0.0.1"
        console.print(f"gossip meshes (peers): {', '.join(meshes)}; IP-diversity and IP-colocation protections: "
                      f"{rules} ({why})")
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
    shell = place.shell() if place else ""
    console.print("where to look (while it runs: --keep-running; kept after it: --data-dir): "
                  f"{shell}psql \"{owner_dsn}\"\n"
                  "  SELECT node_id, violation_type, tx_id, detected_at FROM byzantine_violations ORDER BY id;\n"
                  f"  SELECT node_id, value, received_at FROM vote_history WHERE tx_id = '{first_tx}'"
                  " ORDER BY position;\n"
                  "  node logs and keys: " + str(cluster.base))
    return report.ok and rep.equal and not chain.findings
