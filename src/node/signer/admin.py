"""Operator commands for the signer journal: init, check, export, import (see docs/signer.md).

Each takes the journal's local lock, so it refuses while the node runs: an export taken from a
running node could miss its next signatures, and an import must not race the node's writes.
Exit status: 0 done, 2 refused (the reason on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nacl.signing

from events.errors import ThresholdVoteError

from .signer import Signer


def _key(path: str) -> nacl.signing.SigningKey:
    from node.p2p.identity import load_seed  # refuses key files readable by group/others

    return nacl.signing.SigningKey(load_seed(path))


def _write_new(path: str, data: bytes) -> None:
    """Write a new mode-0600 file atomically (temp + fsync + link); never overwrite an existing one."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, target)
    finally:
        tmp.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tvote signer", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in [("init", "create an empty journal for a NEW trustee (never for one that has signed)"),
                       ("check", "open and verify the journal; print its size"),
                       ("export", "write the journal in the interchange format"),
                       ("import", "add an interchange file's votes (creates the journal if missing)")]:
        p = sub.add_parser(name, help=text)
        p.add_argument("--journal", required=True)
        p.add_argument("--key", required=True, help="the trustee's key file (32-byte seed, mode 0600)")
        p.add_argument("--node-id", required=True)
        if name == "export":
            p.add_argument("--out", required=True, help="new file to write ('-' for stdout)")
        if name == "import":
            p.add_argument("--file", required=True)
    args = ap.parse_args(argv)
    try:
        key = _key(args.key)
        if args.cmd == "import":
            raw = Path(args.file).read_bytes()
            signer, result = Signer.create_from_interchange(args.journal, key, args.node_id, raw)
            with signer:
                print(f"imported {result.imported} votes, {result.already_present} already present; "
                      f"journal holds {signer.journal_size()}")
            return 0
        with Signer.open(args.journal, key, args.node_id, create=args.cmd == "init") as signer:
            if args.cmd == "export":
                data = signer.export()
                if args.out == "-":
                    sys.stdout.buffer.write(data)
                else:
                    _write_new(args.out, data)
                    print(f"exported {signer.journal_size()} votes to {args.out}", file=sys.stderr)
            else:
                print(f"{signer.path}: node {signer.node_id}, vote key {signer.vote_key.hex()}, "
                      f"{signer.journal_size()} signed votes, verified")
        return 0
    except (ThresholdVoteError, ValueError, OSError) as e:  # KeyFileError is a ValueError
        print(f"refused: {e}", file=sys.stderr)
        return 2

