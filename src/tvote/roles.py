"""What each long-running tvote process of a deployment is: its command line, environment and health check.

One description, two users, so they cannot drift apart (issue 18): the processes ``tvote up`` and the
devstack start (on loopback, or each on a host of its own with ``--network netns``), and the services of
``deploy/docker-compose.yml``, which ``tests/unit/test_deploy_roles.py`` rebuilds from these functions with
the compose file's names and paths and compares flag for flag.

A :class:`Place` says where a process listens and how the others name it. On a host of its own (a
container, a namespace, a machine) a process binds every interface on the well-known ports and
advertises its name; on loopback, where every process shares 127.0.0.1, each binds 127.0.0.1 on a
port the kernel picks and advertises what it bound (no metrics endpoint by default there).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

P2P_PORT = 4001  # libp2p (TCP)
API_PORT = 8081  # a trustee's local API (HTTPS off loopback)
METRICS_PORT = 8080  # /metrics and /health of every tvote process
HEALTH_PATH = "/health"
WILDCARD = "0.0.0.0"

TVOTE = "tvote"  # the console script (a container's PATH); ``up`` runs it as ``python -c 'from tvote.cli ...'``
SUBMITTER = "submitter"  # ``python -m submitter``


@dataclass(frozen=True)
class Place:
    """``bind``: the IP the process listens on; ``name``: the IP or DNS name the others dial."""

    bind: str
    name: str
    p2p_port: int = P2P_PORT
    api_port: int = API_PORT
    metrics_port: int | None = METRICS_PORT

    @classmethod
    def own_host(cls, name: str) -> Place:
        """A host of its own: every interface, the well-known ports, ``name`` advertised."""
        return cls(WILDCARD, name)

    @classmethod
    def loopback(cls, p2p_port: int = 0, api_port: int = 0) -> Place:
        return cls("127.0.0.1", "127.0.0.1", p2p_port, api_port, None)

    def _hostport(self, port: int) -> str:
        return f"[{self.bind}]:{port}" if ":" in self.bind else f"{self.bind}:{port}"

    def _maddr(self, host: str, port: int) -> str:
        try:
            proto = "ip6" if ipaddress.ip_address(host).version == 6 else "ip4"
        except ValueError:
            proto = "dns4"
        return f"/{proto}/{host}/tcp/{port}"

    @property
    def listen(self) -> str:
        return self._maddr(self.bind, self.p2p_port)

    @property
    def advertise(self) -> list[str]:
        """Said only when binding a wildcard (then required): otherwise what is bound is what peers dial."""
        return [self._maddr(self.name, self.p2p_port)] if self.bind in (WILDCARD, "::") else []

    @property
    def api_listen(self) -> str:
        return self._hostport(self.api_port)

    @property
    def metrics_listen(self) -> str | None:
        return None if self.metrics_port is None else self._hostport(self.metrics_port)


@dataclass(frozen=True)
class Process:
    """``program`` (:data:`TVOTE` or :data:`SUBMITTER`) run with ``args``, with ``env`` set, healthy when
    ``GET http://<its host>:<health[0]><health[1]>`` answers 2xx (None: no health endpoint)."""

    program: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health: tuple[int, str] | None = None


def _metrics(place: Place) -> tuple[list[str], tuple[int, str] | None]:
    if place.metrics_listen is None:
        return [], None
    return ["--metrics-listen", place.metrics_listen], (place.metrics_port or 0, HEALTH_PATH)


def node(place: Place, node_id: str, key_file: str, api_token_file: str, dsn: str, etcd: str,
         journal: str, bootstrap: Sequence[str] = (), tls: tuple[str, str] | None = None,
         etcd_prefix: str = "/tvote") -> Process:
    """A trustee (``tvote node``). ``journal``: its signing journal (R14), made once by ``tvote signer init``.
    Off loopback its API needs ``tls`` (cert, key)."""
    metrics, health = _metrics(place)
    args = ["node", "--node-id", node_id, "--key-file", key_file, "--journal", journal,
            "--api-token-file", api_token_file,
            "--etcd", etcd, "--etcd-prefix", etcd_prefix, "--listen", place.listen]
    for a in place.advertise:
        args += ["--advertise", a]
    args += ["--api-listen", place.api_listen, *metrics]
    if tls is not None:
        args += ["--api-tls-cert", tls[0], "--api-tls-key", tls[1]]
    for b in bootstrap:
        args += ["--bootstrap", b]
    return Process(TVOTE, args, {"TVOTE_DSN": dsn}, health)


def projector(place: Place, dsn: str) -> Process:
    metrics, health = _metrics(place)
    return Process(TVOTE, ["projector", *metrics], {"TVOTE_DSN": dsn}, health)


def submitter(place: Place, dsn: str, etcd: str, rpc: str, contract: str, chain_id: str, key_file: str, name: str,
              etcd_prefix: str = "/tvote") -> Process:
    """The submitter (``python -m submitter``): ``etcd`` as host:port[,host:port...]."""
    metrics, health = _metrics(place)
    return Process(SUBMITTER, ["--etcd", etcd, "--etcd-prefix", etcd_prefix, "--rpc", rpc, "--contract", contract,
                               "--chain-id", chain_id, "--key-file", key_file, "--name", name, *metrics],
                   {"TVOTE_DSN": dsn}, health)
