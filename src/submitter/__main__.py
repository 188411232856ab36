"""``python -m submitter``: run one submitter process until SIGTERM/SIGINT.

Misconfiguration is refused before anything is signed, with exit code 2 and one clear line on stderr:
a node on another chain id, no (or another) contract at the address, an unreadable key, or a key the
contract does not authorise. An unreachable chain or etcd at start is retried (backoff) for
``--startup-timeout`` seconds each, then exit code 3. A usage error (a missing or malformed option) exits
with code 2 too, before anything is read.

The command line is a typer command like every ``tvote`` role (``tvote.cli``); :func:`parse` reads an
argument list into :class:`Options` without running anything (the deploy tests check the compose
file's command with it).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
import typer.main
from eth_account import Account
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from chain import ChainUnreachable, ContractMismatch, ThresholdRecordClient, WrongChainId
from events.errors import StoreUnavailable
from node.p2p.identity import load_seed
from recording.etcd_guard import EtcdGuard
from submitter.core import FAILPOINTS, Fatal, Submitter
from submitter.fence import LOCK_TTL
from submitter.identity import log_signer

log = logging.getLogger("submitter")

PROG = "python -m submitter"

CrashAt = Enum("CrashAt", {p.replace("-", "_"): p for p in FAILPOINTS}, type=str)  # type: ignore[misc]

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@dataclass(frozen=True)
class Options:
    """The parsed command line (the names argparse gave them before, so callers read the same fields)."""

    dsn: str
    etcd: str
    etcd_prefix: str
    rpc: str
    contract: str
    key_file: Path
    chain_id: int
    confirmations: int = 0
    name: str | None = None
    lock_ttl: int = LOCK_TTL
    stuck_after: float = 15.0
    batch: int = 256
    startup_timeout: float = 60.0
    crash_at: str | None = None
    verbose: bool = False
    log_key_file: Path | None = None
    print_log_key: bool = False
    metrics_listen: str | None = None


@app.command(help="Write consensus values on chain, exactly once.")
def submitter(
    dsn: Annotated[str, typer.Option("--dsn", envvar="TVOTE_DSN",
                                     help="Postgres DSN of the event log (role tvote_app)")],
    etcd: Annotated[str, typer.Option("--etcd", help="etcd endpoint host:port")],
    rpc: Annotated[str, typer.Option("--rpc", help="JSON-RPC URL of the chain node")],
    contract: Annotated[str, typer.Option("--contract", help="ThresholdRecord address")],
    key_file: Annotated[Path, typer.Option("--key-file", help="file holding the submitter's private key (hex)")],
    chain_id: Annotated[int, typer.Option("--chain-id")],
    etcd_prefix: Annotated[str, typer.Option("--etcd-prefix", help="key prefix shared with the nodes' EtcdGuard")]
    = "/tvote",
    confirmations: Annotated[int, typer.Option("--confirmations",
                                               help="blocks on top of the receipt before confirming")] = 0,
    name: Annotated[str | None, typer.Option("--name", help="submitter id in the log (default: submitter-<pid>)")]
    = None,
    lock_ttl: Annotated[int, typer.Option("--lock-ttl", help="etcd lease TTL of the submission locks (s)")]
    = LOCK_TTL,
    stuck_after: Annotated[float, typer.Option("--stuck-after",
                                               help="seconds unmined before a same-nonce replacement")] = 15.0,
    batch: Annotated[int, typer.Option("--batch")] = 256,
    startup_timeout: Annotated[float, typer.Option("--startup-timeout")] = 60.0,
    crash_at: Annotated[CrashAt | None, typer.Option("--crash-at", help="testing: SIGKILL self at this step")]
    = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
    log_key_file: Annotated[Path | None, typer.Option(
        "--log-key-file", help="Ed25519 seed the submitter signs the log with (R13; default: derived from --key-file)")]
    = None,
    print_log_key: Annotated[bool, typer.Option(
        "--print-log-key", help="print the log writer name and public key an operator admits, then exit")] = False,
    metrics_listen: Annotated[str | None, typer.Option(
        "--metrics-listen", help="HOST:PORT of /metrics and /health (default: TVOTE_METRICS_HOST:TVOTE_METRICS_PORT "
                                 "when that port is set, else none)")] = None,
) -> None:
    code = run(Options(dsn=dsn, etcd=etcd, etcd_prefix=etcd_prefix, rpc=rpc, contract=contract, key_file=key_file,
                       chain_id=chain_id, confirmations=confirmations, name=name, lock_ttl=lock_ttl,
                       stuck_after=stuck_after, batch=batch, startup_timeout=startup_timeout,
                       crash_at=crash_at.value if crash_at is not None else None, verbose=verbose,
                       log_key_file=log_key_file, print_log_key=print_log_key, metrics_listen=metrics_listen))
    if code:
        raise typer.Exit(code)


def parse(argv: list[str] | None) -> Options:
    """Read the command line as the process would, without running anything; a usage error exits 2."""
    command = typer.main.get_command(app)
    try:
        ctx = command.make_context(PROG, list(sys.argv[1:] if argv is None else argv))
    except typer.Exit as e:  # --help
        raise SystemExit(e.exit_code) from None
    except typer.TyperException as e:  # usage errors: shown as the process would show them
        e.show()  # type: ignore[attr-defined]
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    params = dict(ctx.params)
    if params.get("crash_at") is not None:
        params["crash_at"] = params["crash_at"].value
    return Options(**params)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the process's exit code."""
    try:
        app(args=argv, prog_name=PROG)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    return 0


def run(args: Options) -> int:
    from observability.allocator import hold_mmap_threshold

    hold_mmap_threshold()  # flat memory over a long run (observability.allocator)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    name = args.name or f"submitter-{os.getpid()}"
    if args.confirmations < 0:
        return _refuse("--confirmations must be >= 0")
    from node.p2p.addrs import AddressError, check_free, parse_hostport
    from observability.metrics import metrics_address_from_env

    try:  # before anything starts: an address that does not parse or is in use
        metrics_at = parse_hostport(args.metrics_listen, "--metrics-listen") if args.metrics_listen \
            else metrics_address_from_env()
        if metrics_at is not None:
            check_free(*metrics_at, "--metrics-listen")
    except AddressError as e:
        return _refuse(str(e))
    try:
        key = args.key_file.read_text(encoding="utf-8").strip()
        account = Account.from_key(key)
        seed = load_seed(args.log_key_file) if args.log_key_file else None
        signer = log_signer(name, key, seed)
    except (OSError, ValueError, TypeError) as e:
        return _refuse(f"cannot use the key in {args.key_file}: {type(e).__name__}")  # never print the key
    if args.print_log_key:
        print(f"{signer.writer} {signer.public_key.hex()}")
        return 0
    try:
        client = None
        for attempt in Retrying(retry=retry_if_exception_type(ChainUnreachable), reraise=True,
                                stop=stop_after_delay(args.startup_timeout),
                                wait=wait_exponential_jitter(multiplier=0.1, max=5.0)):
            with attempt:
                client = ThresholdRecordClient.connect(args.rpc, args.contract, chain_id=args.chain_id)
                authorised = client.is_submitter(account.address)
        assert client is not None
    except WrongChainId as e:
        return _refuse(f"misconfigured chain id: {e}")
    except ContractMismatch as e:
        return _refuse(f"misconfigured contract: {e}")
    except ChainUnreachable as e:
        print(f"submitter: chain unreachable at {args.rpc} for {args.startup_timeout}s: {e}", file=sys.stderr)
        return 3
    if not authorised:
        return _refuse(f"misconfigured key: account {account.address} is not an authorised submitter of "
                       f"contract {client.address}")

    try:  # etcd, like the chain, may not answer yet (a member restarting, the leader cut off): wait, then say so
        for attempt in Retrying(retry=retry_if_exception_type(StoreUnavailable), reraise=True,
                                stop=stop_after_delay(args.startup_timeout),
                                wait=wait_exponential_jitter(multiplier=0.1, max=5.0)):
            with attempt:
                guard = EtcdGuard(args.etcd, args.etcd_prefix, name)
    except StoreUnavailable as e:
        print(f"submitter: etcd unreachable at {args.etcd} for {args.startup_timeout}s: {e}", file=sys.stderr)
        return 3
    from events.log_waiter import LogWaiter
    from events.postgres_store import PostgresStore

    sub = Submitter(PostgresStore(args.dsn), guard, client, account, name=name, log_signer=signer,
                    confirmations=args.confirmations, lock_ttl=args.lock_ttl, stuck_after=args.stuck_after,
                    batch=args.batch, waiter=LogWaiter(args.dsn), failpoint=args.crash_at)
    try:
        sub.recorder.catch_up()
        key_in_log = sub.recorder.ledger.cluster.writers.get(signer.writer)
    except StoreUnavailable:
        key_in_log = None  # the loop retries the store; entitlement is checked again on every append
    else:
        if key_in_log is None or not key_in_log.active or key_in_log.public_key != signer.public_key:
            sub.close()
            guard.close()
            return _refuse(f"{signer.writer} is not an admitted writer with this key: an operator runs "
                           f"`tvote writers add {signer.writer} {signer.public_key.hex()} --role submitter` (R13)")
    stop = threading.Event()
    from observability.metrics import serve_from_env

    serve_from_env(health=lambda: sub.locks.alive(margin=0), at=metrics_at)  # /metrics and /health, if asked
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.warning("%s ready: sender %s, chain %d, contract %s", name, account.address, args.chain_id, client.address)
    try:
        sub.run(stop)
    except Fatal as e:
        print(f"submitter: stopped: {e}", file=sys.stderr)
        return 2
    finally:
        sub.close()
        guard.close()
    return 0


def _refuse(text: str) -> int:
    print(f"submitter: {text}; nothing sent", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
