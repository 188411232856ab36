"""What ``tvote up --data-dir D`` needs to start again on its own data: ``D/stack.json``.

etcd members remember their peer URLs in their data, trustees are known to each other by their
libp2p addresses, the log names the contract the submitter writes to, and a client holds the API
ports: so a second start must use the same ports, keys, tokens, contract and chain. This file keeps
them. It is written once the stack is up (atomically: a crash leaves the old one or the new one)
and read first on the next start; a data dir of a different shape (another N or t) is refused
before anything starts, rather than started into a cluster that contradicts its own log.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from events.errors import InvalidCommand

FORMAT = "tvote-stack/1"
NAME = "stack.json"


class StackMismatch(InvalidCommand):
    """The data dir holds another cluster than the one asked for, or a damaged stack file."""


@dataclass
class StackFile:
    nodes: int
    threshold: int
    pg_port: int
    etcd: list[list]  # [name, client port, peer port] per member
    cluster_id: str = field(default_factory=lambda: secrets.token_hex(8))
    anvil_port: int | None = None
    contract: str | None = None
    chain_id: int = 31337
    runs: int = 0  # completed starts: the next run's transactions are named after it (tx ids never repeat)
    trustees: dict[str, dict] = field(default_factory=dict)  # node_id -> {"api_port", "listen_port"}

    def check(self, nodes: int, threshold: int) -> None:
        if (nodes, threshold) != (self.nodes, self.threshold):
            raise StackMismatch(f"this data dir holds a cluster of N={self.nodes} t={self.threshold} (cluster "
                                f"{self.cluster_id}); asked for N={nodes} t={threshold}: use those flags, or "
                                "another --data-dir")

    def save(self, data_dir: Path) -> None:
        path = data_dir / NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, **asdict(self)}, indent=2))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        tmp.replace(path)

    @classmethod
    def load(cls, data_dir: Path) -> StackFile | None:
        """The stack file of ``data_dir``; None for a new data dir (nothing of a stack in it yet)."""
        path = data_dir / NAME
        if not path.exists():
            if any((data_dir / d).exists() for d in ("postgres", "etcd", "nodes")):
                raise StackMismatch(f"{data_dir} holds service data but no {NAME}: not a data dir `tvote up` "
                                    "finished starting (or one from an older version); use another --data-dir")
            return None
        try:
            raw = json.loads(path.read_text())
            if raw.pop("format", None) != FORMAT:
                raise ValueError("unknown format")
            return cls(**raw)
        except (OSError, ValueError, TypeError) as e:
            raise StackMismatch(f"{path}: not a stack file this version reads ({e})"[:300]) from None
