"""``python -m submitter``: run one submitter process until SIGTERM/SIGINT.

Misconfiguration is refused before anything is signed, with exit code 2 and one clear line on stderr:
a node on another chain id, no (or another) contract at the address, an unreadable key, or a key the
contract does not authorise. An unreachable chain at start is retried (backoff) for
``--startup-timeout`` seconds, then exit code 3.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from eth_account import Account
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from chain import ChainUnreachable, ContractMismatch, ThresholdRecordClient, WrongChainId
from recording.etcd_guard import EtcdGuard
from submitter.core import FAILPOINTS, Fatal, Submitter
from submitter.fence import LOCK_TTL

log = logging.getLogger("submitter")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m submitter",
                                description="Write consensus values on chain, exactly once.")
    p.add_argument("--dsn", required=True, help="Postgres DSN of the event log (role tvote_app)")
    p.add_argument("--etcd", required=True, help="etcd endpoint host:port")
    p.add_argument("--etcd-prefix", default="/tvote", help="key prefix shared with the nodes' EtcdGuard")
    p.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain node")
    p.add_argument("--contract", required=True, help="ThresholdRecord address")
    p.add_argument("--key-file", required=True, type=Path, help="file holding the submitter's private key (hex)")
    p.add_argument("--chain-id", required=True, type=int)
    p.add_argument("--confirmations", type=int, default=0, help="blocks on top of the receipt before confirming")
    p.add_argument("--name", default=None, help="submitter id in the log (default: submitter-<pid>)")
    p.add_argument("--lock-ttl", type=int, default=LOCK_TTL, help="etcd lease TTL of the submission locks (s)")
    p.add_argument("--stuck-after", type=float, default=15.0, help="seconds unmined before a same-nonce replacement")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--crash-at", choices=FAILPOINTS, default=None, help="testing: SIGKILL self at this step")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    name = args.name or f"submitter-{os.getpid()}"
    if args.confirmations < 0:
        return _refuse("--confirmations must be >= 0")
    try:
        key = args.key_file.read_text(encoding="utf-8").strip()
        account = Account.from_key(key)
    except (OSError, ValueError, TypeError) as e:
        return _refuse(f"cannot use the key in {args.key_file}: {type(e).__name__}")  # never print the key
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

    guard = EtcdGuard(args.etcd, args.etcd_prefix, name)
    from events.postgres_store import PostgresStore

    sub = Submitter(PostgresStore(args.dsn), guard, client, account, name=name, confirmations=args.confirmations,
                    lock_ttl=args.lock_ttl, stuck_after=args.stuck_after, batch=args.batch,
                    failpoint=args.crash_at)
    stop = threading.Event()
    from observability.metrics import serve_from_env

    serve_from_env(health=lambda: sub.locks.alive(margin=0))  # /metrics and /health when TVOTE_METRICS_PORT is set
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
