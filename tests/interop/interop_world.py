"""The interop tests' world: a real cluster of Python trustees with js members, and helpers (see conftest.py)."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from jsrun import JsPeer

from chain import ThresholdRecordClient
from devstack.anvil import Anvil
from devstack.trustees import TrusteeCluster
from events.postgres_store import PostgresStore
from node.p2p.identity import load_seed, peer_id_from_seed

SRC = Path(__file__).resolve().parents[2] / "src"
JS_MEMBERS = ("js-1", "js-2", "js-3")


@dataclass
class World:
    dsn: str  # the service role's (tvote_app)
    owner_dsn: str
    cluster: TrusteeCluster
    anvil: Anvil
    client: ThresholdRecordClient
    submitter: subprocess.Popen
    base: Path
    keys: dict[str, Path] = field(default_factory=dict)  # js node id -> key file (js-4: never admitted)
    peers: list[JsPeer] = field(default_factory=list)
    forgery: dict | None = None  # js-3's reply to its forged vote, once sent

    def forge(self) -> dict:
        """js-3 sends one vote in trustee-1's name, signed with its own key (once per world: it is banned for it)."""
        if self.forgery is None:
            self.forgery = self.peer("js-3").call(cmd="vote", tx_id="interop_forged", value=9, **{"as": "trustee-1"})
        return self.forgery

    @property
    def members_file(self) -> Path:
        return self.base / "members.json"

    def peer_id(self, name: str) -> str:
        return peer_id_from_seed(load_seed(self.keys[name]))

    def trustee_addrs(self) -> list[str]:
        return [t.status["listen_addrs"][0] for t in self.cluster.trustees]

    def peer(self, name: str, connect: list[str] | None = None, dial_timeout: float = 20) -> JsPeer:
        """The js peer ``name`` (one process per key: a second one would be the same libp2p peer)."""
        for p in self.peers:
            if p.name == name and p.proc.poll() is None:
                return p
        p = JsPeer(self.keys[name], name, connect if connect is not None else self.trustee_addrs(), self.members_file,
                   self.base / f"{name}.log", dial_timeout=dial_timeout)
        self.peers.append(p)
        return p

    def rows(self, event_type: str | None = None) -> list:
        store = PostgresStore(self.dsn)
        try:
            rows = store.read_all(limit=1_000_000)
        finally:
            store.close()
        return [r for r in rows if event_type is None or r.event_type == event_type]

    def counters(self) -> list[dict]:
        return [self.cluster.counters(i) for i in range(len(self.cluster.trustees))]


def database_for(pg_server) -> tuple[str, str, str]:
    from services import TEMPLATE

    from tvote import db

    name = f"interop_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
    return name, pg_server.dsn(name, user=db.APP_ROLE), pg_server.dsn(name)


def public_key(key_file: Path) -> bytes:
    import nacl.signing

    return bytes(nacl.signing.SigningKey(load_seed(key_file)).verify_key)
