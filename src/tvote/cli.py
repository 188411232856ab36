"""``tvote``: one command line for every role and operator task.

Commands that act on a running deployment take ``--dsn`` (or ``TVOTE_DSN``) for Postgres and,
when they append events, ``--etcd`` (or ``TVOTE_ETCD``) and ``--etcd-prefix``. Operator
actions (unban, members) are events in the log, naming the operator and the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from events import rules
from events.audit import verify
from events.errors import ThresholdVoteError
from events.follow import DEFAULT_RETAIN_FINAL
from events.log_waiter import LogWaiter
from events.postgres_store import COMMIT_BOUND_S, PostgresStore, connect_failure
from events.writers import RowSigner, operator_writer
from node import duty, wire
from observability.allocator import hold_mmap_threshold
from observability.logging import configure_logging
from observability.metrics import serve_metrics
from projections.projector import Projector
from projections.replay import replay as do_replay
from recording.etcd_guard import EtcdGuard
from recording.recorder import Recorder, Status
from tvote.report import print_bans

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
audit_app = typer.Typer(help="Check the log from the log alone.", no_args_is_help=True)
tx_app = typer.Typer(help="Inspect transactions.", no_args_is_help=True)
bans_app = typer.Typer(help="Inspect bans.", no_args_is_help=True)
members_app = typer.Typer(help="Admit and remove trustees (events in the log).", no_args_is_help=True)
writers_app = typer.Typer(help="Admit and revoke operators and submitters (R13: every log entry is signed).",
                          no_args_is_help=True)
signer_app = typer.Typer(help="A trustee's signing journal (R14): create, verify, export, import (docs/signer.md).",
                         no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(tx_app, name="tx")
app.add_typer(bans_app, name="bans")
app.add_typer(members_app, name="members")
app.add_typer(signer_app, name="signer")
app.add_typer(writers_app, name="writers")
console = Console()

Dsn = Annotated[str, typer.Option("--dsn", envvar="TVOTE_DSN", help="Postgres connection string (libpq form).")]
EtcdEndpoint = Annotated[str, typer.Option("--etcd", envvar="TVOTE_ETCD",
                                           help="etcd endpoint(s), http://host:port[,http://host:port...]")]
EtcdPrefix = Annotated[str, typer.Option("--etcd-prefix", envvar="TVOTE_ETCD_PREFIX", help="Key prefix")]
Operator = Annotated[str, typer.Option("--operator", help="Who does this (recorded in the log).")]
OperatorKey = Annotated[Path, typer.Option(
    "--operator-key-file", envvar="TVOTE_OPERATOR_KEY_FILE",
    help="The operator's Ed25519 key file (mode 0600): operator commands are signed with it (R13).")]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded in the log).")]
MetricsListen = Annotated[str | None, typer.Option(
    "--metrics-listen", help="HOST:PORT of /metrics and /health (default: TVOTE_METRICS_HOST:TVOTE_METRICS_PORT "
                             "when that port is set, else none).")]


def fail(msg: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {msg}")
    return typer.Exit(1)


def _connect_check(dsn: str) -> None:
    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except (psycopg.Error, ValueError) as e:  # unreachable, refused, only standbys, or not a DSN at all
        text = connect_failure(e) if isinstance(e, psycopg.OperationalError) else str(e).strip()
        first = (text.splitlines() or [type(e).__name__])[0]
        raise fail(f"cannot reach Postgres ({first}); check --dsn / TVOTE_DSN") from None


# --- the main job ------------------------------------------------------------------------------


@app.command()
def up(
    nodes: Annotated[int, typer.Option(help="Trustees (N), one process each.", min=1, max=20)] = 5,
    threshold: Annotated[int, typer.Option(help="Identical votes needed (t).", min=1)] = 4,
    transactions: Annotated[int, typer.Option(help="Transactions in the scenario.", min=1)] = 30,
    byzantine: Annotated[str, typer.Option(help="The last trustee's behaviour: double|minority|forge|silent|none")]
    = "minority",
    rate: Annotated[float, typer.Option(help="Transactions offered per second.", min=0.1)] = 10.0,
    deadline_ms: Annotated[int, typer.Option(help="Per-transaction deadline (R9).", min=100)] = 5000,
    data_dir: Annotated[Path | None, typer.Option(help="Keep the services' data here (default: temp).")] = None,
    keep_running: Annotated[bool, typer.Option(help="Leave everything up until Ctrl-C.")] = False,
    postgres: Annotated[str, typer.Option(help="embedded (one server) | patroni (three members under Patroni on "
                                               "the etcd cluster, synchronous replication)")] = "embedded",
    network: Annotated[str, typer.Option(
        help="loopback: every process on 127.0.0.1. netns (root): each process in a network namespace of its own, "
             "with its own address on a private bridge, removed at the end (docs/netns.md).")] = "loopback",
) -> None:
    """Start Postgres, etcd x3 and N trustee nodes (on loopback, or each on a host of its own), run a real
    scenario, summarise it."""
    from tvote.placement import NETWORKS
    from tvote.up import UpOptions, run

    if byzantine not in ("double", "minority", "forge", "silent", "none"):
        raise fail("--byzantine must be one of double, minority, forge, silent, none")
    if threshold > nodes:
        raise fail(f"--threshold {threshold} > --nodes {nodes}: need 1 <= t <= N")
    if postgres not in ("embedded", "patroni"):
        raise fail("--postgres must be embedded or patroni")
    if network not in NETWORKS:
        raise fail(f"--network must be one of {', '.join(NETWORKS)}")
    if network == "netns" and os.geteuid() != 0:
        raise fail("--network netns needs root (it creates network namespaces, veths and iptables rules): "
                   "run it as root, or use --network loopback")
    if network == "netns" and data_dir:
        raise fail("--data-dir works with --network loopback only (a test network's addresses are new every run)")
    if network == "netns" and postgres == "patroni":
        raise fail("--postgres patroni runs on --network loopback only (not built on the test network yet)")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        ok = run(UpOptions(nodes, threshold, transactions, byzantine, rate, deadline_ms, data_dir, keep_running,
                           postgres=postgres, network=network), console)
    except KeyboardInterrupt:
        console.print("stopped")
        return
    except (ThresholdVoteError, RuntimeError, TimeoutError, FileNotFoundError, OSError) as e:
        raise fail(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if not ok:
        raise typer.Exit(1)


def _is_peer_addr(addr: str) -> bool:
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    try:
        info_from_p2p_addr(Multiaddr(addr))
    except Exception:  # multiaddr and libp2p raise several unrelated types for bad input
        return False
    return True


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


# --- roles -------------------------------------------------------------------------------------


@app.command()
def projector(dsn: Dsn, once: Annotated[bool, typer.Option(help="Catch up and exit.")] = False,
              batch: Annotated[int, typer.Option(help="Events per transaction.", min=1)] = 5000,
              metrics_listen: MetricsListen = None) -> None:
    """Run the projector: follow the log into the SQL projections (exactly once, resumable)."""
    from node.p2p.addrs import AddressError

    try:
        metrics_at = _metrics_address(metrics_listen)
    except AddressError as e:
        raise fail(str(e)) from None
    _connect_check(dsn)
    hold_mmap_threshold()
    configure_logging(service="tvote-projector")
    p = Projector(dsn)
    stopping = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.__setitem__("now", True))
    # healthy while it projects (or waits, caught up) and has not lost Postgres for over 30 s
    if metrics_at is not None:
        serve_metrics(metrics_at[1], metrics_at[0],
                      health=lambda: not stopping["now"] and time.monotonic() - p.healthy_at < 30)
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the loop; the batch in flight is atomic
            if once:
                n = p.catch_up(batch=batch)
                console.print(f"projected {n} events; position {p.position()}")
            else:
                waiter = LogWaiter(dsn)
                try:
                    p.follow(lambda: stopping["now"], batch=batch, waiter=waiter)
                finally:
                    waiter.close()
    finally:
        p.close()


@app.command()
def node(
    node_id: Annotated[str, typer.Option(help="This trustee's node id, as admitted.")],
    key_file: Annotated[Path, typer.Option(help="Ed25519 seed (32 bytes or 64 hex), mode 0600.")],
    dsn: Dsn,
    etcd: EtcdEndpoint,
    api_token_file: Annotated[Path, typer.Option(help="Bearer token for the local API, mode 0600.")],
    etcd_prefix: EtcdPrefix = "/tvote",
    listen: Annotated[list[str] | None, typer.Option(
        help="A multiaddr libp2p listens on, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable; default /ip4/127.0.0.1/tcp/0).")]
    = None,
    advertise: Annotated[list[str] | None, typer.Option(
        help="A multiaddr peers should dial, e.g. /ip4/203.0.113.7/tcp/4001 (repeatable): signed into the peer "
             "record and announced in the DHT. Required when --listen is a wildcard; default: the --listen ones.")]
    = None,
    api_listen: Annotated[str, typer.Option(
        help="HOST:PORT of the local API (port 0: any); anything but loopback needs --api-tls-cert/--api-tls-key.")]
    = "127.0.0.1:0",
    metrics_listen: MetricsListen = None,
    listen_port: Annotated[int | None, typer.Option(hidden=True, help="Old form of --listen (its port).")] = None,
    listen_host: Annotated[str | None, typer.Option(hidden=True, help="Old form of --listen (its IP).")] = None,
    api_host: Annotated[str | None, typer.Option(hidden=True, help="Old form of --api-listen (its host).")] = None,
    api_port: Annotated[int | None, typer.Option(hidden=True, help="Old form of --api-listen (its port).")] = None,
    api_tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate (chain) for the API's TLS.")] = None,
    api_tls_key: Annotated[Path | None, typer.Option(help="PEM private key for the API's TLS, mode 0600.")] = None,
    api_plain_http: Annotated[bool, typer.Option(
        help="Serve the API off loopback without TLS (only behind something else that encrypts).")] = False,
    bootstrap: Annotated[list[str] | None, typer.Option(help="Bootstrap peer multiaddr (repeatable).")] = None,
    relay_service: Annotated[bool, typer.Option(
        help="Relay circuits (libp2p circuit relay v2) for members behind a NAT.")] = False,
    relay: Annotated[list[str] | None, typer.Option(
        help="A member relay's peer multiaddr to reserve a slot on while not publicly reachable (repeatable).")]
    = None,
    reachability: Annotated[str, typer.Option(
        help="auto (ask connected members, AutoNAT), public, or private (reserve on --relay at once).")] = "auto",
    bootstrap_timeout: Annotated[float, typer.Option(
        help="Seconds to reach a bootstrap peer (or any member) at start before exiting with the reason.",
        min=0.0)] = 30.0,
    status_file: Annotated[Path | None, typer.Option(help="Write peer id, addresses and API port here.")] = None,
    journal: Annotated[Path | None, typer.Option(
        help="The signing journal (R14; default <key file>.journal). Create it once with `tvote signer init`.")]
    = None,
    record_grace_ms: Annotated[int, typer.Option(
        help="Wait this long per rank before recording a vote another member is first to record "
             "(node.duty); 0: every node records every vote at once.", min=0, max=60_000)] = duty.DEFAULT_GRACE_MS,
    record_patience_ms: Annotated[int, typer.Option(
        help="How long a vote may wait for a live member ranked before us (node.duty).",
        min=0, max=600_000)] = duty.DEFAULT_PATIENCE_MS,
    record_hold_ms: Annotated[int, typer.Option(
        help="As the member recording a transaction's votes first, hold them up to this long to append them "
             "together, never past the vote that completes the threshold (node.duty.release_held); at most "
             "half the grace; 0: append each batch as it arrives.", min=0, max=30_000)] = duty.DEFAULT_HOLD_MS,
    vote_fanout: Annotated[int, typer.Option(
        help="Send each of our votes to the members ranked first for its transaction, this many besides us "
             "(node.duty.recipients); 0: to every member.", min=0, max=1000)] = duty.DEFAULT_FANOUT,
    publish_interval_ms: Annotated[float, typer.Option(
        help="Under load, send at most one gossip message per this interval (idle: at once), at least.",
        min=0.0, max=10_000.0)] = wire.PUBLISH_INTERVAL_MS,
    publish_interval_per_member_ms: Annotated[float, typer.Option(
        help="... or per this times the eligible members, if longer (capped at 500 ms); 0: the fixed interval.",
        min=0.0, max=1_000.0)] = wire.PUBLISH_INTERVAL_PER_MEMBER_MS,
    pg_commit_bound: Annotated[float, typer.Option(
        help="Give up a Postgres write after this many seconds, its wait for a synchronous standby included "
             "(in doubt: retried, found by its idempotency keys).", min=0.1, max=600.0)] = COMMIT_BOUND_S,
    retain_final: Annotated[int, typer.Option(
        help="Keep this many finished transactions in memory; older ones are read back from the log when a "
             "late vote names them (events.follow: same verdicts, less memory).", min=100,
        max=10_000_000)] = DEFAULT_RETAIN_FINAL,
) -> None:
    """Run a trustee node: libp2p gossip, the decider, the cluster log, the local API."""
    from node import runner
    from node.p2p.addrs import AddressError
    from node.p2p.identity import KeyFileError
    from node.service import NodeConfig, NodeStartError

    try:
        addrs = _node_addresses(listen or [], advertise or [], api_listen, listen_host, listen_port, api_host,
                                api_port)
        metrics_at = _metrics_address(metrics_listen)
        for b in bootstrap or []:
            if not _is_peer_addr(b):
                raise AddressError(f"--bootstrap {b[:120]!r} is not a peer multiaddr (/ip4/HOST/tcp/PORT/p2p/PEER_ID)")
        from node.api import check_api_listen, load_tls

        if api_tls_cert or api_tls_key:
            load_tls(str(api_tls_cert or ""), str(api_tls_key or ""))
        check_api_listen(addrs.api[0], bool(api_tls_cert or api_tls_key), api_plain_http)
    except (AddressError, NodeStartError) as e:
        raise fail(str(e)) from None
    for r in relay or []:
        if not _is_peer_addr(r) or "/p2p-circuit" in r:
            raise fail(f"--relay {r[:120]!r} is not a peer multiaddr (/ip4/HOST/tcp/PORT/p2p/PEER_ID)")
    if reachability not in ("auto", "public", "private"):
        raise fail(f"--reachability {reachability[:40]!r}: give auto, public or private")
    if reachability == "private" and not relay:
        raise fail("--reachability private needs a --relay to reserve a slot on")
    _connect_check(dsn)
    hold_mmap_threshold()  # flat memory over a long run (observability.allocator)
    configure_logging(service="tvote-node")
    # py-libp2p logs expected connection churn (closing peers, DHT reads) at ERROR level.
    logging.getLogger("libp2p").setLevel(os.environ.get("TVOTE_LIBP2P_LOG_LEVEL", "CRITICAL"))
    try:
        token = _read_secret(api_token_file)
        cfg = NodeConfig(node_id, str(key_file), dsn, etcd, etcd_prefix, 0, bootstrap or [], addrs.api[1], token,
                         record_grace_ms=record_grace_ms, record_patience_ms=record_patience_ms,
                         record_hold_ms=record_hold_ms,
                         vote_fanout=vote_fanout, publish_interval_ms=publish_interval_ms,
                         publish_interval_per_member_ms=publish_interval_per_member_ms, journal=str(journal or ""),
                         listen=addrs.listen, advertise=addrs.advertise, api_host=addrs.api[0],
                         api_tls_cert=str(api_tls_cert or ""), api_tls_key=str(api_tls_key or ""),
                         api_plain_http=api_plain_http, bootstrap_timeout_s=bootstrap_timeout,
                         relay_service=relay_service, relays=list(relay or []), reachability=reachability,
                         pg_commit_bound_s=pg_commit_bound, retain_final=retain_final)
        stopped = runner.serve(cfg, status_file, console.print, metrics_at=metrics_at)
    except (NodeStartError, KeyFileError, OSError) as e:
        raise fail(str(e)) from None
    if not stopped:
        raise fail("a node thread died; see the log above")


@dataclasses.dataclass(frozen=True)
class NodeAddresses:
    listen: list[str]
    advertise: list[str]
    api: tuple[str, int]


def _node_addresses(listen: list[str], advertise: list[str], api_listen: str, listen_host: str | None,
                    listen_port: int | None, api_host: str | None, api_port: int | None) -> NodeAddresses:
    """The node's addresses from its flags, checked, and the ones it binds probed: an address that does not
    parse, is in use or is not on this host is a one-line error before anything starts (issue 18)."""
    from node.p2p.addrs import (
        LOOPBACK_LISTEN,
        AddressError,
        check_advertised,
        check_free,
        ip_of,
        parse_advertise,
        parse_hostport,
        parse_listen,
        port_of,
    )

    if listen and (listen_host is not None or listen_port is not None):
        raise AddressError("give --listen, or the old --listen-host/--listen-port, not both")
    if api_listen != "127.0.0.1:0" and (api_host is not None or api_port is not None):
        raise AddressError("give --api-listen, or the old --api-host/--api-port, not both")
    if not listen and (listen_host is not None or listen_port is not None):
        host = listen_host or "127.0.0.1"
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise AddressError(f"--listen-host {host[:80]!r} is not an IP address") from None
        listen = [f"/{'ip6' if ':' in host else 'ip4'}/{host}/tcp/{listen_port or 0}"]
    listen = [parse_listen(a) for a in listen] or [LOOPBACK_LISTEN]
    advertise = [parse_advertise(a) for a in advertise]
    check_advertised(listen, advertise)
    if api_host is not None or api_port is not None:
        host = api_host or "127.0.0.1"
        api_listen = f"[{host}]:{api_port or 0}" if ":" in host else f"{host}:{api_port or 0}"
    api = parse_hostport(api_listen, "--api-listen")
    for a in listen:
        check_free(ip_of(a) or "", port_of(a), "--listen")
    check_free(*api, "--api-listen")
    return NodeAddresses(listen, advertise, api)


def _metrics_address(value: str | None) -> tuple[str, int] | None:
    """``--metrics-listen HOST:PORT``, else ``TVOTE_METRICS_PORT``/``TVOTE_METRICS_HOST`` (the older form), else
    None (no metrics endpoint). Probed like the other listen addresses."""
    from node.p2p.addrs import check_free, parse_hostport
    from observability.metrics import metrics_address_from_env

    at = parse_hostport(value, "--metrics-listen") if value else metrics_address_from_env()
    if at is not None:
        check_free(*at, "--metrics-listen")
    return at


def _read_secret(path: Path) -> str:
    from node.service import NodeStartError

    st = path.stat()
    if st.st_mode & 0o077:
        raise NodeStartError(f"{path} is readable by others (mode {oct(st.st_mode & 0o777)}): chmod 600 it")
    return path.read_text().strip()


@app.command()
def replay(dsn: Dsn, keep: Annotated[bool, typer.Option(help="Keep the replay schema.")] = False) -> None:
    """Rebuild every projection from the log into fresh tables; print both digests (R12)."""
    _connect_check(dsn)
    try:
        r = do_replay(dsn, keep=keep)
    except psycopg.errors.InsufficientPrivilege:
        raise fail("replay builds fresh tables beside the live ones: give a role that may create schemas "
                   "(the database owner's DSN, not the service role tvote_app)") from None
    except psycopg.Error as e:
        raise fail(f"replay failed: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}") from None
    console.print(f"position {r.position}: replayed {r.events} events in {r.seconds:.2f}s "
                  f"({r.events_per_second:,.0f}/s)")
    console.print(f"live   digest {r.live_digest}\nreplay digest {r.replay_digest}")
    if not r.equal:
        raise fail(f"projections differ in: {', '.join(r.differing_tables)}")
    console.print("[green]equal[/green]")


@audit_app.command("verify")
def audit_verify(dsn: Dsn) -> None:
    """Walk the hash chain and re-check every signature and ban's evidence; name the first problem."""
    _connect_check(dsn)
    report = verify(PostgresStore(dsn))
    for f in report.integrity + report.evidence:
        console.print(f"[red]position {f.position}[/red]: {f.problem}")
    if not report.ok:
        raise typer.Exit(1)
    console.print(f"[green]OK[/green]: {report.events} events, chain head {report.last_hash}")


@audit_app.command("chain")
def audit_chain_cmd(dsn: Dsn,
                    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of the chain node.")],
                    contract: Annotated[str, typer.Option(help="ThresholdRecord address.")],
                    chain_id: Annotated[int, typer.Option(help="Expected chain id.")] = 31337) -> None:
    """The chain against the log: each consensus recorded once, with the log's value and certificate."""
    from chain import ChainError, ThresholdRecordClient
    from submitter.audit import audit_chain

    _connect_check(dsn)
    try:
        client = ThresholdRecordClient.connect(rpc, contract, chain_id=chain_id)
        report = audit_chain(PostgresStore(dsn), client)
    except ChainError as e:
        raise fail(str(e)) from None
    for f in report.findings:
        console.print(f"[red]finding[/red]: {f}")
    if report.findings:
        raise typer.Exit(1)
    console.print(f"[green]OK[/green]: {client.record_count()} records on chain, each a consensus of the log, once")


@app.command()
def status(dsn: Dsn) -> None:
    """Transactions by state, the members and t, whether a quorum is possible (R10), and the projector's lag.

    The members, t and the log head come from the log itself (what every node follows); the
    transaction counts from the projections, with how far behind the log they are.
    """
    _connect_check(dsn)
    store = PostgresStore(dsn)
    try:
        cluster, head = _cluster_from_log(store)
    finally:
        store.close()
    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT status, count(*) FROM tx_state GROUP BY status ORDER BY status").fetchall()
        proj = c.execute("SELECT coalesce(max(position), 0) FROM projector_tracking").fetchone()[0]
    t = Table(title=f"transactions (projected to position {proj} of {head})")
    t.add_column("status")
    t.add_column("count", justify="right")
    for s, n in rows:
        t.add_row(s, str(n))
    console.print(t)
    members = [m for m in cluster.members.values() if m.active]  # removed members are no longer members
    eligible = sum(1 for m in members if m.eligible)
    threshold = cluster.config.threshold if cluster.config else None
    possible = threshold is not None and eligible >= threshold
    console.print(f"members: {eligible} eligible of {len(members)} ({sum(m.banned for m in members)} banned); "
                  f"t = {threshold if threshold is not None else 'not configured'}; quorum "
                  + ("[green]possible[/green]" if possible else "[red]impossible (R10)[/red]"))
    lag = head - proj
    console.print(f"log head {head}; projections {'up to date' if lag == 0 else f'{lag} events behind'}")


def _cluster_from_log(store: PostgresStore) -> tuple[rules.Cluster, int]:
    """The cluster as an honest follower folds it from the log (R13), and the log's last position."""
    from events.follow import Follower

    f = Follower(trust_own=False)
    while True:
        rows = store.read_all(after=f.read, limit=5000)
        f.feed(rows)
        if len(rows) < 5000:
            return f.ledger.cluster, f.read


@tx_app.command("show")
def tx_show(tx_id: str, dsn: Dsn) -> None:
    """A transaction's state and its vote history."""
    _connect_check(dsn)
    with psycopg.connect(dsn) as c:
        st = c.execute("SELECT status, value, abort_reason FROM tx_state WHERE tx_id = %s", (tx_id,)).fetchone()
        if st is None:
            raise fail(f"no transaction {tx_id!r} in the projections")
        console.print(f"{tx_id}: {st[0]} value={st[1]} {st[2] or ''}")
        for node, value, at in c.execute(
            "SELECT node_id, value, received_at FROM vote_history WHERE tx_id = %s ORDER BY position", (tx_id,)
        ):
            console.print(f"  {at}  {node:>12}  {value}")


@bans_app.command("list")
def bans_list(dsn: Dsn) -> None:
    """Banned members, why, and the evidence."""
    _connect_check(dsn)
    print_bans(dsn, console)


def _operator(operator: str, key_file: Path) -> RowSigner:
    from node.p2p.identity import KeyFileError, load_seed

    try:
        return RowSigner.from_seed(operator_writer(operator), load_seed(key_file))
    except (KeyFileError, OSError, ValueError) as e:
        raise fail(f"operator key: {e}") from None


def _recorder(dsn: str, etcd: str, prefix: str, signer: RowSigner) -> Recorder:
    _connect_check(dsn)
    return Recorder(PostgresStore(dsn), EtcdGuard(etcd, prefix, signer.writer), signer)


def _execute_one(rec: Recorder, cmd: rules.Command) -> None:
    try:
        r = rec.execute([cmd])[0]
    finally:
        rec.guard.close()
    if r.status is Status.REJECTED:
        raise fail(str(r.error))
    console.print(f"{r.status.value}: " + ", ".join(e.TYPE for e in r.events))


@app.command()
def unban(node_id: str, dsn: Dsn, etcd: EtcdEndpoint, operator: Operator, reason: Reason,
          operator_key_file: OperatorKey, etcd_prefix: EtcdPrefix = "/tvote") -> None:
    """Lift a ban: an audited event naming the operator and the reason (R10), signed with the operator's key."""
    _execute_one(_recorder(dsn, etcd, etcd_prefix, _operator(operator, operator_key_file)),
                 rules.Unban(node_id, operator, reason))


@app.command()
def configure(
    dsn: Dsn, etcd: EtcdEndpoint, operator: Operator, operator_key_file: OperatorKey,
    threshold: Annotated[int | None, typer.Option(help="t: identical votes needed for consensus.")] = None,
    deadline_ms: Annotated[int | None, typer.Option(help="R9 deadline after a transaction's first vote.")] = None,
    reputation_floor: Annotated[int | None, typer.Option(help="Milli-points below which operators are alerted.")]
    = None,
    silent_penalty: Annotated[int | None, typer.Option(help="Milli-points a silence costs (R9).")] = None,
    participation_reward: Annotated[int | None, typer.Option(
        help="Milli-points a vote for the consensus value earns back (R9).")] = None,
    floor_ban_after: Annotated[int | None, typer.Option(
        help="Opt in to the floor ban: consensus transactions missed in a row below the floor (0: never).")] = None,
    etcd_prefix: EtcdPrefix = "/tvote",
) -> None:
    """Set the cluster's configuration (an audited ClusterConfigured); settings not given keep their value.

    A cluster never configured takes the defaults of R9 as revised (no floor ban) for what is not given.
    """
    rec = _recorder(dsn, etcd, etcd_prefix, _operator(operator, operator_key_file))
    try:
        rec.catch_up()
    except Exception:
        rec.guard.close()
        raise
    current = rec.ledger.cluster.config
    given = {"threshold": threshold, "deadline_ms": deadline_ms, "reputation_floor": reputation_floor,
             "silent_penalty": silent_penalty, "participation_reward": participation_reward,
             "floor_ban_after": floor_ban_after}
    kept = dataclasses.asdict(current) if current else {}
    settings = {k: v if v is not None else kept.get(k) for k, v in given.items()}
    if settings["threshold"] is None:
        rec.guard.close()
        raise fail("the cluster has no configuration yet: give --threshold")
    _execute_one(rec, rules.Configure(operator=operator, **{k: v for k, v in settings.items() if v is not None}))


@members_app.command("add")
def members_add(node_id: str, vote_key_hex: str, peer_id: str, dsn: Dsn, etcd: EtcdEndpoint,
                operator: Operator, operator_key_file: OperatorKey, etcd_prefix: EtcdPrefix = "/tvote") -> None:
    """Admit a trustee (R1): node id, Ed25519 vote key (hex), libp2p peer id (the one the key derives)."""
    try:
        key = bytes.fromhex(vote_key_hex)
    except ValueError:
        raise fail("vote key must be 64 hex characters") from None
    _execute_one(_recorder(dsn, etcd, etcd_prefix, _operator(operator, operator_key_file)),
                 rules.AdmitMember(node_id, key, peer_id, operator))


@members_app.command("remove")
def members_remove(node_id: str, dsn: Dsn, etcd: EtcdEndpoint, operator: Operator, reason: Reason,
                   operator_key_file: OperatorKey,
                   threshold: Annotated[int | None, typer.Option(help="New t, if it must change.")] = None,
                   etcd_prefix: EtcdPrefix = "/tvote") -> None:
    """Remove a trustee; pass --threshold when t would exceed the members left."""
    _execute_one(_recorder(dsn, etcd, etcd_prefix, _operator(operator, operator_key_file)),
                 rules.RemoveMember(node_id, operator, reason, threshold))


@writers_app.command("add")
def writers_add(
    writer: Annotated[str, typer.Argument(help="operator:<name> or submitter:<name>")],
    dsn: Dsn, etcd: EtcdEndpoint, operator: Operator, operator_key_file: OperatorKey,
    public_key: Annotated[str | None, typer.Option(help="The writer's Ed25519 public key (hex).")] = None,
    submitter_key_file: Annotated[Path | None, typer.Option(
        help="A submitter's Ethereum key file: admit the log key it derives (python -m submitter's default).")]
    = None,
    etcd_prefix: EtcdPrefix = "/tvote",
) -> None:
    """Admit an operator or a submitter to write the log (R13). The first operator admits itself (the genesis)."""
    signer = _operator(operator, operator_key_file)
    role = writer.split(":", 1)[0]
    if submitter_key_file is not None:
        from submitter.identity import log_seed

        key = RowSigner.from_seed(writer, log_seed(writer.removeprefix("submitter:"),
                                                   submitter_key_file.read_text())).public_key
    elif public_key is not None:
        try:
            key = bytes.fromhex(public_key)
        except ValueError:
            raise fail("--public-key must be hex") from None
    elif writer == signer.writer:
        key = signer.public_key  # an operator admitting itself
    else:
        raise fail("give --public-key (or --submitter-key-file for a submitter)")
    _execute_one(_recorder(dsn, etcd, etcd_prefix, signer), rules.AdmitWriter(writer, role, key, operator))


@writers_app.command("remove")
def writers_remove(writer: str, dsn: Dsn, etcd: EtcdEndpoint, operator: Operator, reason: Reason,
                   operator_key_file: OperatorKey, etcd_prefix: EtcdPrefix = "/tvote") -> None:
    """Revoke an operator's or submitter's right to write the log."""
    _execute_one(_recorder(dsn, etcd, etcd_prefix, _operator(operator, operator_key_file)),
                 rules.RevokeWriter(writer, operator, reason))


@app.command()
def keygen(path: Annotated[Path, typer.Argument(help="A new key file (mode 0600); refused if it exists.")]) -> None:
    """Create an Ed25519 key file for a trustee, an operator or a submitter's log key; print its public key."""
    from node.p2p.identity import generate_key_file, load_seed

    if path.exists():
        raise fail(f"{path} exists: never overwrite a key")
    peer = generate_key_file(path)
    public = RowSigner.from_seed("-", load_seed(path)).public_key.hex()
    console.print(f"public key {public}\npeer id    {peer}")


@app.command()
def gc(dsn: Dsn, etcd: EtcdEndpoint, operator: Operator, operator_key_file: OperatorKey,
       submission_days: Annotated[int, typer.Option(help="Archive confirmed submissions older than this.", min=1)]
       = 30,
       vote_days: Annotated[int, typer.Option(help="Archive vote history older than this.", min=1)] = 90,
       etcd_prefix: EtcdPrefix = "/tvote") -> None:
    """Retention (seed Algorithm 7): archive old projection rows via an event, so replays agree.

    etcd's fast-path keys need no sweep: they lapse with their writer's claim lease (within ~40 s).
    The log is never rewritten.
    """
    from observability.metrics import observe_gc

    rec = _recorder(dsn, etcd, etcd_prefix, _operator(operator, operator_key_file))
    try:
        _execute_one(rec, rules.ApplyRetention(int(time.time() * 1000), operator, submission_days, vote_days))
    except typer.Exit:
        observe_gc(False)
        raise
    observe_gc(True)
    console.print("the projector archives the rows when it reaches the event")


PgBackRest = Annotated[bool, typer.Option(
    "--pgbackrest", help="Physical mode: a pgBackRest full backup plus archived WAL (docs: deploy/README.md).")]
Repo = Annotated[Path | None, typer.Option(help="--pgbackrest: the repository directory (local).")]
Stanza = Annotated[str, typer.Option(help="--pgbackrest: the stanza (one Postgres server's backups).")]


@app.command()
def backup(out_dir: Annotated[Path | None, typer.Argument(help="A new directory (logical mode).")] = None,
           dsn: Dsn = "", etcd: Annotated[str | None, typer.Option(
        "--etcd", envvar="TVOTE_ETCD",
        help="etcd endpoint(s) to snapshot, comma-separated: the first that answers (omit: Postgres only).")] = None,
           pgbackrest: PgBackRest = False, repo: Repo = None, stanza: Stanza = "tvote",
           retention_full: Annotated[int, typer.Option(help="--pgbackrest: full backups kept.")] = 2,
           ) -> None:
    """pg_dump + etcd snapshot + a manifest (position, chain head, digest, BLAKE3 of each file).

    With --pgbackrest: set up the stanza and WAL archiving into --repo, take a full backup (the
    server's superuser DSN, on this machine); `tvote restore --pgbackrest` restores to a log position.
    """
    from tvote.backup import BackupError
    from tvote.backup import backup as do_backup

    if not dsn:
        raise fail("give --dsn (or TVOTE_DSN)")
    if pgbackrest:
        if out_dir is not None or etcd is not None or repo is None:
            raise fail("--pgbackrest takes --repo (and --stanza), no backup directory and no --etcd")
        _connect_check(dsn)
        from tvote import pgbackrest as pgbr

        try:
            r = pgbr.backup(dsn, pgbr.Stanza(stanza, repo.absolute()), retention_full=retention_full)
        except BackupError as e:
            raise fail(str(e)) from None
        console.print(f"pgbackrest full backup {r.label} of stanza {r.stanza} in {r.repo}: {r.seconds:.1f}s, "
                      f"{r.database_size / 1e6:.1f} MB of data, {r.repo_size / 1e6:.1f} MB in the repository")
        console.print(f"log positions {r.log_start}..{r.log_end} while it ran; WAL {r.wal_start}..{r.wal_stop}; "
                      f"archive {r.archive_min}..{r.archive_max}"
                      + ("; archive_command set (ALTER SYSTEM + reload)" if r.archiving_configured else "")
                      + "; WAL archiving goes on")
        return
    if out_dir is None or repo is not None:
        raise fail("give a backup directory (or --pgbackrest --repo DIR)")
    _connect_check(dsn)
    try:
        m = do_backup(dsn, etcd, out_dir)
    except BackupError as e:
        raise fail(str(e)) from None
    except psycopg.Error as e:
        raise fail(f"backup failed: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}") from None
    console.print(f"backup in {out_dir}: log position {m.log_position}, "
                  f"projection digest {m.projection_digest[:16]}...")


@app.command()
def restore(
    backup_dir: Annotated[Path | None, typer.Argument(help="A `tvote backup` directory (logical mode).")] = None,
    dsn: Annotated[str, typer.Option("--dsn", envvar="TVOTE_DSN", help="An EMPTY database (owner role); with "
                                     "--pgbackrest: the backed-up source (superuser).")] = "",
    etcd_data_dir: Annotated[Path | None, typer.Option(help="Restore the etcd snapshot into this new dir.")] = None,
    etcd_name: Annotated[str, typer.Option(help="Member name for the restored etcd.")] = "etcd0",
    etcd_peer_url: Annotated[str, typer.Option(help="Peer URL for the restored etcd.")] = "http://127.0.0.1:2380",
    create: Annotated[bool, typer.Option("--create", help="Create the target database if missing.")] = False,
    check: Annotated[bool, typer.Option(help="Verify chain head, audit and replay digest after.")] = True,
    pgbackrest: PgBackRest = False, repo: Repo = None, stanza: Stanza = "tvote",
    position: Annotated[int | None, typer.Option(help="--pgbackrest: the log position to restore to.")] = None,
    target_dir: Annotated[Path | None, typer.Option(help="--pgbackrest: an empty directory for the copy.")] = None,
    switch_wal: Annotated[bool, typer.Option(help="--pgbackrest: archive the source's current WAL first.")] = False,
    keep_running: Annotated[bool, typer.Option(help="--pgbackrest: leave the restored copy running.")] = False,
    port: Annotated[int | None, typer.Option(help="--pgbackrest: the copy's port (default: a free one).")] = None,
    dbname: Annotated[str, typer.Option(help="--pgbackrest without --dsn: the database that holds the log.")] = "tvote",
) -> None:
    """Verify a backup's files, restore Postgres (and etcd), then prove it: audit + replay digest.

    With --pgbackrest: restore the stanza into --target-dir up to log --position (the commit of the
    transaction that appended it), start it, and prove it: chain end, audit verify, replay digest
    equal to the source's log up to that position (--dsn; without it, to the archived log's).
    """
    from tvote.backup import BackupError
    from tvote.backup import restore as do_restore

    if pgbackrest:
        if backup_dir is not None or repo is None or position is None or target_dir is None:
            raise fail("--pgbackrest takes --repo, --position and --target-dir (and --stanza), no backup directory")
        if switch_wal and not dsn:
            raise fail("--switch-wal acts on the source: give its --dsn")
        if dsn:
            _connect_check(dsn)
        from tvote import pgbackrest as pgbr

        st = pgbr.Stanza(stanza, repo.absolute())
        try:
            if switch_wal:
                console.print(f"archived WAL segment {pgbr.switch_wal(dsn, st)}")
            r = pgbr.restore_to_position(dsn or None, st, position, target_dir, port=port, keep_running=keep_running,
                                         dbname=dbname)
        except BackupError as e:
            raise fail(str(e)) from None
        if not dsn:
            console.print(f"no source: read the log on a copy restored to the archive's end ({r.seconds_probe:.1f}s, "
                          "removed)")
        console.print(f"restored backup {r.backup_label} + WAL to {r.target_type} {r.target or '(backup end)'} in "
                      f"{r.target_dir}: files {r.seconds_restore:.1f}s ({r.restored_bytes / 1e6:.1f} MB), recovery "
                      f"{r.seconds_recovery:.1f}s")
        console.print(f"log ends at {r.log_position} (hash {r.last_event_hash[:16]}, source {r.source_hash[:16]}); "
                      f"audit {'OK' if r.audit_ok else 'FAILED'} ({r.audit_events} events); replay digest "
                      f"{r.replay_digest[:16]}, source's log up to {position}: {r.source_digest[:16]}")
        if keep_running:
            console.print(f"the copy runs on port {r.port} (socket {r.target_dir})")
        if not r.ok:
            raise fail("; ".join(r.problems))
        console.print("[green]proved[/green]")
        return
    if backup_dir is None:
        raise fail("give a backup directory (or --pgbackrest ...)")
    if not dsn:
        raise fail("give --dsn (or TVOTE_DSN)")
    try:
        r = do_restore(backup_dir, dsn, etcd_data_dir, etcd_name=etcd_name, etcd_peer_url=etcd_peer_url,
                       create_database=create, check=check)
    except BackupError as e:
        raise fail(str(e)) from None
    console.print(f"restored to position {r.log_position} in {r.seconds:.1f}s; audit "
                  f"{'OK' if r.audit_ok else 'FAILED'}; replay digest {'equal' if r.ok else 'DIFFERENT'}")
    if not r.ok:
        raise fail("; ".join(r.problems))


@app.command()
def migrate(dsn_url: Annotated[str, typer.Option("--url", envvar="TVOTE_DB_URL",
                                                 help="postgresql+psycopg://owner@host:port/db")],
            revision: str = "head", down: bool = False) -> None:
    """Apply (or with --down, revert) schema migrations, as the database owner."""
    import sqlalchemy.exc

    from tvote import db

    try:
        (db.downgrade if down else db.upgrade)(dsn_url, revision if revision != "head" or not down else "base")
    except (sqlalchemy.exc.SQLAlchemyError, psycopg.Error, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise fail(f"migration failed ({first[:200]}); check --url / TVOTE_DB_URL") from None
    console.print("done")


Journal = Annotated[Path, typer.Option(help="The signing journal (default for `tvote node`: <key file>.journal).")]
KeyFile = Annotated[Path, typer.Option("--key", help="The trustee's key file (32-byte seed, mode 0600).")]
NodeId = Annotated[str, typer.Option(help="The trustee's node id, as admitted.")]


def _signer(*argv: str) -> None:
    from node.signer.admin import main as signer_main

    code = signer_main(list(argv))
    if code:
        raise typer.Exit(code)


@signer_app.command("init")
def signer_init(journal: Journal, key: KeyFile, node_id: NodeId) -> None:
    """Create the empty journal of a NEW trustee (never for one that has signed: import its export)."""
    _signer("init", "--journal", str(journal), "--key", str(key), "--node-id", node_id)


@signer_app.command("check")
def signer_check(journal: Journal, key: KeyFile, node_id: NodeId) -> None:
    """Open and verify the journal (every signature under the key); print its size."""
    _signer("check", "--journal", str(journal), "--key", str(key), "--node-id", node_id)


@signer_app.command("export")
def signer_export(journal: Journal, key: KeyFile, node_id: NodeId,
                  out: Annotated[str, typer.Option(help="A new file to write ('-': stdout).")]) -> None:
    """Write the journal in the interchange format (refused while the node runs)."""
    _signer("export", "--journal", str(journal), "--key", str(key), "--node-id", node_id, "--out", out)


@signer_app.command("import")
def signer_import(journal: Journal, key: KeyFile, node_id: NodeId,
                  file: Annotated[Path, typer.Option(help="An interchange file of this trustee.")]) -> None:
    """Add an interchange file's votes (creates the journal if missing); refused whole if any contradicts it."""
    _signer("import", "--journal", str(journal), "--key", str(key), "--node-id", node_id, "--file", str(file))


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except ThresholdVoteError as e:
        console.print(f"[red]error:[/red] {e}")
        sys.exit(1)
