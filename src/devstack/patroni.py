"""Postgres 15 with a standby that takes over: members managed by Patroni on the project's etcd (issue 17).

Why Patroni: the log (R13) lives in one Postgres; without a replica a lost server stops the
system and a lost disk loses the log. Patroni keeps one leader key in etcd (the cluster we
already run, through its v3 API: the ``etcd3`` section, since etcd 3.4 serves no v2), promotes a
standby when the leader's key lapses, and rewinds the old primary into a standby when it returns.

Why synchronous replication, strict: a commit is acknowledged only once the synchronous standby
has it on disk, and Patroni only promotes the member named in its ``/sync`` key, so no
acknowledged append is lost in a failover. ``synchronous_mode_strict`` keeps that true when the
standby is down: the primary stops acknowledging commits rather than running alone (a lone primary's
acknowledged writes would die with its disk). With three members one standby may be lost without a
pause: the other becomes synchronous. docs/decisions.md ("Postgres HA with Patroni") has the
argument.

Every client reaches the cluster through one multi-host libpq DSN
(``host=a,b,c port=p1,p2,p3 target_session_attrs=read-write``): libpq tries the members in turn and
keeps the one that accepts writes, so a client that reconnects after a failover finds the new
primary by itself. ``url`` is the same for SQLAlchemy (alembic): repeated ``host=h:p`` query keys.

The members run on loopback, as the ``postgres`` user when we are root (initdb refuses root), each
in a directory of its own. Or each on a host of a test network (devstack.netns):
``PatroniCluster(..., hosts=[h.ip for h in hs], prefixes=[h.prefix for h in hs])``: a member listens on
(and advertises) its host's address, starts through the prefix (``ip netns exec <ns>``) and lets the hosts
of that subnet in (``samenet``); the DSN names those addresses, so the harness reaches them from a host of
the same network. ``kill_member`` is a machine crash: SIGKILL to Patroni and to the whole
process group of its postmaster (every backend with it). Patroni's keys live under
``/<namespace>/<scope>/`` in etcd, which must not overlap the service's prefix (``/tvote`` by
default, ``recording.etcd_guard``): the constructor refuses an overlap with
:class:`PrefixCollision` before anything starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg

from devstack.postgres import PG_BIN_DIRS, SUPERUSER, pg_bin
from devstack.procs import die_with_parent, free_port, port_in_use, wait_until

LOOPBACK = "127.0.0.1"
# Patroni from PyPI in a venv of its own (./dev bootstrap), not Debian's 3.0.2: there a stalled old primary,
# thawed, put the leader key back unconditionally (patroni/patroni#2689, fixed in 3.0.3), the promoted
# member was rewound onto its timeline and votes acknowledged there were lost (tests/ha, docs/decisions.md).
# The venv is made from the system Python: Patroni runs as the postgres user and starts Postgres through a
# spawned interpreter, which must be one that user may execute (not one under a private /root).
PATRONI_VERSION = "3.0.4"
PATRONI_HOME = Path(os.environ.get("TVOTE_PATRONI_HOME", "/opt/tvote-patroni"))


def patroni_bin() -> str | None:
    """The ``patroni`` executable this project runs (None: not installed; run ``./dev bootstrap``)."""
    exe = PATRONI_HOME / "bin" / "patroni"
    return str(exe) if exe.exists() else None


NAMESPACE = "/patroni"  # Patroni's keys: /patroni/<scope>/leader, /sync, /members/<name>, ...
SCOPE = "tvote-pg"
SERVICE_PREFIX = "/tvote"  # the service's default etcd prefix (node, submitter, CLI: --etcd-prefix)
REPLICATION_USER = "replicator"


class PrefixCollision(ValueError):
    """Patroni's etcd keys would overlap the service's (either key root is a prefix of the other)."""


class NoPrimary(RuntimeError):
    """No member of the cluster accepts writes (within the time asked)."""


def key_root(namespace: str, scope: str) -> str:
    """Where Patroni keeps a cluster's keys: ``<namespace>/<scope>/`` (as Patroni's ``AbstractDCS`` builds it)."""
    return f"/{namespace.strip('/')}/{scope.strip('/')}/" if namespace.strip("/") else f"/{scope.strip('/')}/"


def check_prefixes(namespace: str, scope: str, service_prefixes: Sequence[str]) -> None:
    """Refuse a Patroni key root that overlaps a service prefix, in either direction.

    etcd ranges are byte prefixes: ``/tvote`` as a prefix range would also cover ``/tvote-pg/...``,
    so the check is on the raw strings, not on path components.
    """
    if not scope.strip("/"):
        raise PrefixCollision("the Patroni scope is empty: its keys would sit directly under the namespace")
    root = key_root(namespace, scope)
    for p in service_prefixes:
        svc = "/" + p.strip("/")
        if svc == "/":
            raise PrefixCollision(f"the service's etcd prefix {p!r} is the whole key space: it overlaps Patroni's "
                                  f"{root}")
        if root.startswith(svc) or svc.startswith(root.rstrip("/")):
            raise PrefixCollision(f"Patroni's etcd keys {root} overlap the service's prefix {svc}: choose another "
                                  f"namespace/scope (default {key_root(NAMESPACE, SCOPE)}) or service prefix; "
                                  "nothing was started")


@dataclass(frozen=True)
class Timing:
    """How fast Patroni acts (s): ``ttl`` is the leader key's lease, the longest a dead primary holds the
    cluster; Patroni needs ``loop_wait + 2 * retry_timeout <= ttl``."""

    ttl: int = 6
    loop_wait: int = 1
    retry_timeout: int = 2

    def __post_init__(self) -> None:
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(f"ttl {self.ttl} < loop_wait {self.loop_wait} + 2 * retry_timeout {self.retry_timeout} "
                             "(Patroni's rule)")


def dcs_settings(timing: Timing, fsync: bool = True) -> dict:
    """The cluster-wide settings Patroni writes to etcd at bootstrap (``bootstrap.dcs``): the same for the
    devstack members and the compose members (``tvote.patroni_deploy``), so both fail over alike."""
    return {
        "ttl": timing.ttl, "loop_wait": timing.loop_wait, "retry_timeout": timing.retry_timeout,
        "maximum_lag_on_failover": 16 * 1024 * 1024,
        # a crashed primary is not restarted in place for minutes: the synchronous standby has
        # every acknowledged commit, so failing over at once loses nothing
        "master_start_timeout": 0,
        "synchronous_mode": True,
        "synchronous_mode_strict": True,
        "synchronous_node_count": 1,
        "postgresql": {
            "use_pg_rewind": True,
            # an old primary that cannot be rewound is cloned again from the new one: what
            # only it held was never acknowledged (synchronous commit), so nothing is lost
            "remove_data_directory_on_rewind_failure": True,
            "remove_data_directory_on_diverged_timelines": True,
            "use_slots": True,
            "parameters": {
                "max_connections": 200, "shared_buffers": "128MB", "fsync": "on" if fsync else "off",
                # pg_rewind needs full-page writes, with or without fsync
                "full_page_writes": "on", "synchronous_commit": "on", "wal_level": "replica",
                "hot_standby": "on", "wal_log_hints": "on", "max_wal_senders": 10,
                "max_replication_slots": 10, "wal_keep_size": "256MB",
            },
        },
    }


def member_config(*, scope: str, namespace: str, name: str, etcd_hosts: Sequence[str], api_listen: str,
                  api_connect: str, pg_listen: str, pg_connect: str, data_dir: str, bin_dir: str, pgpass: str,
                  socket_dir: str, pg_hba: Sequence[str], timing: Timing, fsync: bool = True,
                  parameters: dict[str, str] | None = None, post_bootstrap: str | None = None) -> dict:
    """One member's Patroni configuration (YAML; JSON is a subset). The one source of both the devstack's
    members (:class:`PatroniCluster`) and deploy/patroni/pgN.yml (``tvote.patroni_deploy``): what differs
    between them is where things are (addresses, directories, ``pg_hba``), never how Patroni behaves.

    ``parameters``: member-local server settings added to the socket directory (WAL archiving: it names
    the member's own data directory, so it is not a cluster-wide setting). ``post_bootstrap``: a script
    Patroni runs once on the member that initialised the cluster (the compose members create the app role
    and database there). Passwords are never in it: Patroni reads them from its environment
    (``PATRONI_SUPERUSER_PASSWORD``, ...).
    """
    bootstrap: dict = {
        "dcs": dcs_settings(timing, fsync),
        "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums", *([] if fsync else ["no-sync"])],
    }
    if post_bootstrap:
        bootstrap["post_bootstrap"] = post_bootstrap
    return {
        "scope": scope,
        "namespace": namespace,
        "name": name,
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {"listen": api_listen, "connect_address": api_connect},
        "etcd3": {"hosts": list(etcd_hosts), "protocol": "http"},
        "bootstrap": bootstrap,
        "postgresql": {
            "listen": pg_listen,
            "connect_address": pg_connect,
            "data_dir": data_dir,
            "bin_dir": bin_dir,
            "pgpass": pgpass,
            "use_unix_socket": True,
            "basebackup": [{"checkpoint": "fast"}, *([] if fsync else ["no-sync"])],
            "authentication": {
                "superuser": {"username": SUPERUSER},
                "replication": {"username": REPLICATION_USER},
                "rewind": {"username": SUPERUSER},
            },
            "parameters": {"unix_socket_directories": socket_dir, **(parameters or {})},
            "pg_hba": list(pg_hba),
        },
        "watchdog": {"mode": "off"},
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


@dataclass
class Member:
    name: str
    port: int  # Postgres
    api_port: int  # Patroni's REST API
    base: Path
    proc: subprocess.Popen | None = None
    host: str = LOOPBACK  # the address it listens on and is reached at (a test network host's, or loopback)
    prefix: list[str] = field(default_factory=list)  # argv prefix it starts through (``ip netns exec <ns>``)

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def config(self) -> Path:
        return self.base / "patroni.yml"

    @property
    def log_file(self) -> Path:
        return self.base / "patroni.log"

    def api(self, path: str, timeout: float = 2) -> dict | None:
        """GET Patroni's REST API; None when the member does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.api_port}{path}", timeout=timeout) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:  # 503 from /primary on a standby still has a body
            try:
                return json.loads(e.read() or b"{}")
            except ValueError:
                return {}
        except (OSError, ValueError):
            return None


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


class PatroniCluster:
    """``size`` Postgres members under Patroni on etcd; ``dsn``/``url`` reach whichever is primary.

    The same surface as ``devstack.postgres.Postgres`` where the harness uses it (``start``, ``stop``,
    ``destroy``, ``dsn``, ``url``, ``create_database``, ``port``), so a caller can take either.
    """

    def __init__(self, etcd_endpoints: Sequence[str], size: int = 3, base_dir: Path | None = None,
                 namespace: str = NAMESPACE, scope: str = SCOPE, service_prefixes: Sequence[str] = (SERVICE_PREFIX,),
                 fsync: bool = True, ttl: int = 6, loop_wait: int = 1, retry_timeout: int = 2,
                 die_with_parent: bool = False, hosts: Sequence[str] | None = None,
                 prefixes: Sequence[Sequence[str]] | None = None, parameters: dict[str, str] | None = None) -> None:
        """``etcd_endpoints``: client URLs of the project's etcd; ``service_prefixes``: the etcd prefixes the
        service uses there (refused if Patroni's keys would overlap them); ``die_with_parent``: Patroni gets
        SIGTERM (and stops its Postgres) when this process dies (``devstack.procs.die_with_parent``).

        ``fsync=False`` (tests): no fsync in Postgres, initdb or base backups. A kill -9 of a process loses
        nothing the kernel holds, so failover tests stay meaningful; only a power loss would not be.
        ``ttl``: the leader key's lease (s), the longest a dead primary holds the cluster; Patroni needs
        ``loop_wait + 2 * retry_timeout <= ttl``. ``hosts``/``prefixes``: one address and one argv prefix per
        member, to put each on a host of a test network (default: all on loopback, no prefix). ``parameters``:
        server settings added to every member's own configuration (e.g. ``wal_sender_timeout``).
        """
        timing = Timing(ttl, loop_wait, retry_timeout)  # refuses what Patroni's rule forbids
        check_prefixes(namespace, scope, service_prefixes)
        if size < 2:
            raise ValueError(f"size {size}: a Patroni cluster here has a primary and at least one standby")
        for what, given in (("hosts", hosts), ("prefixes", prefixes)):
            if given is not None and len(given) != size:
                raise ValueError(f"{len(given)} {what} for {size} members: one each")
        if patroni_bin() is None:
            raise FileNotFoundError(f"patroni not found in {PATRONI_HOME}: `./dev bootstrap` installs Patroni "
                                    f"{PATRONI_VERSION} there (Debian's 3.0.2 can lose acknowledged commits)")
        self.etcd_endpoints = [e.removeprefix("http://") for e in etcd_endpoints]
        self.namespace, self.scope = namespace, scope
        self.fsync = fsync
        self.timing = timing
        self.die_with_parent = die_with_parent
        self.parameters = dict(parameters or {})
        self._owned_tmp = base_dir is None
        self.base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="tvote-patroni-"))
        self.members = [Member(f"pg{i}", free_port(), free_port(), self.base / f"pg{i}",
                               host=hosts[i] if hosts is not None else LOOPBACK,
                               prefix=list(prefixes[i]) if prefixes is not None else [])
                        for i in range(size)]

    # connection strings ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.members[0].port

    @property
    def host(self) -> str:
        return self.members[0].host

    def dsn(self, db: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        """A multi-host libpq DSN: every member, and only a writable one is kept."""
        pw = f" password={password}" if password else ""
        hosts = ",".join(m.host for m in self.members)
        ports = ",".join(str(m.port) for m in self.members)
        return f"host={hosts} port={ports} dbname={db} user={user}{pw} target_session_attrs=read-write"

    def url(self, db: str = "postgres", user: str = SUPERUSER) -> str:
        """The same for SQLAlchemy: ``?host=h:p&host=h:p...`` (its psycopg dialect joins them into one DSN)."""
        hosts = "&".join(f"host={m.host}:{m.port}" for m in self.members)
        return f"postgresql+psycopg://{quote(user)}@/{quote(db)}?{hosts}&target_session_attrs=read-write"

    def member_dsn(self, m: Member, db: str = "postgres", user: str = SUPERUSER) -> str:
        """One member only, whatever its role (a standby answers reads)."""
        return f"host={m.host} port={m.port} dbname={db} user={user}"

    def local_dsn(self, m: Member, db: str = "postgres", user: str = SUPERUSER) -> str:
        """One member through its Unix socket: reached from any network namespace, whatever cuts are in force
        (a test asks a member cut off from everyone what it thinks it is)."""
        return f"host={m.base} port={m.port} dbname={db} user={user}"

    # files -------------------------------------------------------------------------------------------

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(SUPERUSER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _config(self, m: Member) -> dict:
        bin_dir = next((d for d in PG_BIN_DIRS if Path(d, "postgres").exists()), str(Path(pg_bin("postgres")).parent))
        peers = "samenet" if m.prefix else f"{LOOPBACK}/32"  # on a test network: the hosts of its subnet
        hba = ["local all all trust", f"host all all {peers} trust",
               f"host replication {REPLICATION_USER} {peers} trust"]
        return member_config(
            scope=self.scope, namespace=self.namespace, name=m.name, etcd_hosts=self.etcd_endpoints,
            api_listen=f"{m.host}:{m.api_port}", api_connect=f"{m.host}:{m.api_port}",
            pg_listen=f"{m.host}:{m.port}", pg_connect=f"{m.host}:{m.port}", data_dir=str(m.data_dir),
            bin_dir=bin_dir, pgpass=str(m.base / "pgpass"), socket_dir=str(m.base), pg_hba=hba,
            timing=self.timing, fsync=self.fsync, parameters=self.parameters)

    def _argv(self, m: Member) -> list[str]:
        argv = [patroni_bin() or "patroni", str(m.config)]
        if self.die_with_parent:
            argv = [*die_with_parent(), *argv]
        if os.geteuid() == 0:  # setpriv execs in place: the pid we hold is Patroni's own. The parent-death
            # signal goes after the user change, which would clear it (prctl(2))
            argv = ["setpriv", f"--reuid={SUPERUSER}", f"--regid={SUPERUSER}", "--init-groups", "--", *argv]
        return [*m.prefix, *argv]  # ``ip netns exec`` execs in place too

    # lifecycle ---------------------------------------------------------------------------------------

    def start_member(self, m: Member) -> None:
        for port in (m.port, m.api_port) if not m.prefix else ():  # (on a host of its own: Patroni says)
            if port_in_use(port):
                raise RuntimeError(f"port {port} is busy: another server is running there")
        m.base.mkdir(parents=True, exist_ok=True)
        self._chown(m.base)
        m.config.write_text(json.dumps(self._config(m), indent=1))  # YAML is a superset of JSON
        self._chown(m.config)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRONI_", "PG"))}
        env["HOME"] = str(m.base)
        env["PYTHONPATH"] = ""  # Patroni runs on its own venv (the system Python), not on ours
        with open(m.log_file, "ab") as out:
            m.proc = subprocess.Popen(self._argv(m), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=m.base,
                                      start_new_session=True)

    def start(self, timeout: float = 90) -> PatroniCluster:
        """Start every member; return once there is a primary that takes writes and every standby streams."""
        self.base.mkdir(parents=True, exist_ok=True)
        self._chown(self.base)
        self.heal(timeout)
        return self

    def heal(self, timeout: float = 90) -> None:
        """Start every member that is down (killed by a scenario); return once all stream again."""
        for m in self.members:
            if m.proc is None or m.proc.poll() is not None:
                self.start_member(m)
        self.wait_primary(timeout)
        wait_until(lambda: self.streaming() == len(self.members) - 1 and self.sync_standby() is not None,
                   timeout, "patroni standbys")

    def cluster(self) -> dict | None:
        """Patroni's view (``GET /cluster``) from the first member that answers."""
        for m in self.members:
            if m.proc and m.proc.poll() is None and (c := m.api("/cluster")) is not None and c.get("members"):
                return c
        return None

    def roles(self) -> dict[str, str]:
        c = self.cluster() or {}
        return {x["name"]: x.get("role", "") for x in c.get("members", [])}

    def streaming(self) -> int:
        c = self.cluster() or {}
        return sum(x.get("state") in ("streaming", "running") and x.get("role") in ("replica", "sync_standby")
                   for x in c.get("members", []))

    def sync_standby(self) -> Member | None:
        name = next((n for n, r in self.roles().items() if r == "sync_standby"), None)
        return self._by_name(name)

    def _by_name(self, name: str | None) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def primary(self, among: Sequence[Member] | None = None) -> Member | None:
        """The member that takes writes now (a direct probe over the network, as clients ask; not Patroni's word
        alone), of ``among`` when given."""
        for m in self.members if among is None else among:
            try:
                with psycopg.connect(self.member_dsn(m), connect_timeout=2) as c:
                    if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        return m
            except psycopg.OperationalError:
                continue
        return None

    def wait_primary(self, timeout: float = 60, other_than: Member | None = None) -> Member:
        """The primary, once there is one (``other_than``: a new one, after a failover)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.primary()
            if p is not None and p is not other_than:
                return p
            time.sleep(0.2)
        raise NoPrimary(f"no writable Postgres member after {timeout:.0f}s: see {self.base}/pg*/patroni.log")

    def walreceiver_pid(self, m: Member) -> int:
        """The WAL receiver of a standby (chaos: SIGSTOP it and the primary's synchronous commits wait)."""
        with psycopg.connect(self.member_dsn(m), connect_timeout=2) as c:
            row = c.execute("SELECT pid FROM pg_stat_wal_receiver").fetchone()
        if not row:
            raise RuntimeError(f"{m.name} has no WAL receiver: not a streaming standby")
        return int(row[0])

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as c:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                c.execute(f'CREATE DATABASE "{name}"')

    def _postmaster_pid(self, m: Member) -> int | None:
        """The member's running postmaster: the pid in postmaster.pid, if that process is a postgres on this data
        directory (a pid file a crash left behind may name a pid reused by someone else's process)."""
        try:
            pid = int((m.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if str(m.data_dir).encode() in cmdline else None

    def _kill_postmaster(self, m: Member) -> None:
        """SIGKILL to the postmaster's process group (Patroni starts it in a session of its own)."""
        pid = self._postmaster_pid(m)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)

    def kill_member(self, m: Member) -> None:
        """A machine crash: SIGKILL to Patroni and to its postmaster's process group (every backend)."""
        if m.proc is None:
            return
        if m.proc.poll() is None:
            os.killpg(m.proc.pid, signal.SIGKILL)
            m.proc.wait()
        self._kill_postmaster(m)
        if m.prefix:  # on a host of its own: its postmaster gone (this namespace's loopback says nothing)
            wait_until(lambda: self._postmaster_pid(m) is None, 10, f"{m.name} gone")
        else:
            wait_until(lambda: not port_in_use(m.port), 10, f"{m.name} gone")

    def freeze_member(self, m: Member) -> None:
        """A primary cut off, as near as loopback allows: SIGSTOP to Patroni and to its postmaster's process group.

        Nothing of it answers (the leader key lapses, its clients' calls hang with their TCP connections
        open, as behind a cut link); :meth:`thaw_member` lets it run on, to find it has been replaced.
        """
        self._signal_member(m, signal.SIGSTOP)

    def thaw_member(self, m: Member) -> None:
        self._signal_member(m, signal.SIGCONT)

    def _signal_member(self, m: Member, sig: int) -> None:
        """``sig`` to Patroni, the postmaster and every child of it: each backend leads a process group of its
        own (Postgres calls setsid in every child), so the postmaster's group is the postmaster alone."""
        pid = self._postmaster_pid(m)
        if pid:
            for p in [pid, *_children(pid)]:  # the postmaster first: a stopped one forks no more
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, sig)
        if m.proc and m.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(m.proc.pid, sig)

    def switchover(self, candidate: Member | None = None, timeout: float = 60) -> Member:
        """A planned switchover through Patroni's REST API (``POST /switchover``); returns the new primary.

        ``candidate`` defaults to the synchronous standby (in synchronous mode Patroni takes no other).
        """
        old = self.wait_primary(timeout)
        new = candidate or self.sync_standby()
        if new is None:
            raise NoPrimary("no synchronous standby to switch over to")
        body = json.dumps({"leader": old.name, "candidate": new.name}).encode()
        req = urllib.request.Request(f"http://{old.host}:{old.api_port}/switchover", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                answer = r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"switchover {old.name} -> {new.name} refused: {e.code} "
                               f"{e.read().decode(errors='replace')[:200]}") from None
        got = self.wait_primary(timeout, other_than=old)
        if got is not new:
            raise RuntimeError(f"switchover to {new.name} made {got.name} primary ({answer[:200]})")
        return got

    def stop_member(self, m: Member, timeout: float = 30) -> None:
        """SIGTERM to Patroni: it stops its Postgres and gives up the leader key (a clean switchover)."""
        if m.proc and m.proc.poll() is None:
            m.proc.terminate()
            try:
                m.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_member(m)

    def stop(self) -> None:
        """Standbys first, then the primary: no failover is started by our own stop."""
        p = self.primary() if any(m.proc and m.proc.poll() is None for m in self.members) else None
        for m in sorted(self.members, key=lambda m: m is p):
            self.stop_member(m)
        for m in self.members:  # a postmaster Patroni left behind (it was killed, or did not stop it)
            if m.proc is not None:
                self._kill_postmaster(m)

    def destroy(self) -> None:
        for m in self.members:
            self.kill_member(m)
        if self._owned_tmp:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PatroniCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
