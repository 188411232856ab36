"""A private PostgreSQL 15 server on loopback, started by the project for dev, tests and the demo.

Or on a test network (devstack.netns): ``Postgres(host=h.ip, prefix=h.prefix)`` listens on that host's
address only, starts through the prefix (``ip netns exec <ns>``), lets the hosts of that subnet in
(``host all all samenet trust`` in pg_hba.conf) and is reached by the harness itself through its
Unix socket (``local_dsn``/``local_url``), which no network namespace hides.

Debian's ``postgresql-15`` server binaries are used (no cluster of Debian's own is needed).
``initdb`` refuses to run as root, so when we are root the server runs as the ``postgres``
system user, over a data directory it owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import psycopg

from devstack.procs import free_port, port_in_use, wait_until

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
SUPERUSER = "postgres"
LOOPBACK = "127.0.0.1"
SETTINGS_FILE = "tvote-devstack.conf"


def pg_bin(name: str) -> str:
    for d in PG_BIN_DIRS:
        p = Path(d) / name
        if p.exists():
            return str(p)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found: install Debian's postgresql-15 (apt-get install postgresql-15)")


class Postgres:
    """initdb + pg_ctl start/stop over a data directory; ``dsn(db)`` for clients."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None, fsync: bool = True,
                 host: str = LOOPBACK, prefix: Sequence[str] = (), settings: Mapping[str, str] | None = None) -> None:
        """``host``: the one address to listen on (and to put in ``dsn``/``url``); ``prefix``: an argv prefix
        for the server's commands, e.g. a test network host's ``ip netns exec <ns>``; ``settings``: server
        settings written to ``tvote-devstack.conf`` in the data directory (included by postgresql.conf), e.g.
        WAL archiving (``tvote.pgbackrest.archive_settings``). A file rather than ``-c`` options so that
        ``ALTER SYSTEM`` (and an operator) can still change them."""
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="tvote-pg-")) / "data"
        self.port = port or free_port()
        self.fsync = fsync
        self.host = host
        self.prefix = list(prefix)
        self.settings = dict(settings or {})
        self._owned_tmp = data_dir is None
        self.log_file = self.data_dir.parent / "postgres.log"

    # Running as root: hand the files to the postgres user and run the binaries as it.
    def _as_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", SUPERUSER, "--", *argv]

    def _server(self, argv: list[str]) -> list[str]:
        """A command of the server's own (pg_ctl): as the postgres user, through the prefix."""
        return [*self.prefix, *self._as_user(argv)]

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(SUPERUSER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _check_reachable(self) -> None:
        """Running as root, the server runs as the postgres user: it must be able to reach its directory."""
        probe = self._as_user(["test", "-w", str(self.data_dir.parent)])
        if os.geteuid() != 0 or subprocess.run(probe).returncode == 0:
            return
        private = next((p for p in reversed(self.data_dir.parent.resolve().parents) if not os.stat(p).st_mode & 0o001),
                       self.data_dir.parent)
        raise RuntimeError(f"the {SUPERUSER} user cannot reach {self.data_dir.parent}: {private} is private to its "
                           f"owner; choose a data dir it can reach (e.g. under /var/lib or /srv), or allow it through "
                           f"with `chmod o+x {private}`")

    def start(self) -> Postgres:
        if self.host == LOOPBACK and not self.prefix and port_in_use(self.port):  # (elsewhere: pg_ctl says)
            raise RuntimeError(f"port {self.port} is busy: another server is running there (stop it or pick --pg-port)")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._chown(self.data_dir.parent)
        self._check_reachable()
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._chown(self.data_dir)
            subprocess.run(
                self._as_user([pg_bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                               "-E", "UTF8", "--locale=C.UTF-8"]),
                check=True, capture_output=True,
            )
        if self.host != LOOPBACK:
            self._allow_samenet()
        self._write_settings()
        opts = (
            f"-c listen_addresses={self.host} -c port={self.port} -c unix_socket_directories={self.data_dir} "
            f"-c max_connections=200 -c shared_buffers=256MB -c fsync={'on' if self.fsync else 'off'} "
            f"-c synchronous_commit=on -c full_page_writes={'on' if self.fsync else 'off'}"
        )
        self.log_file.touch()
        self._chown(self.log_file)
        subprocess.run(
            self._server([pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-o", opts,
                          "-w", "-t", "60", "start"]),
            check=True, capture_output=True,
        )
        wait_until(self._ready, 30, "postgres")
        return self

    def _write_settings(self) -> None:
        """``settings`` into ``tvote-devstack.conf`` (rewritten at each start; empty when none), included once."""
        lines = [f"{k} = '{str(v).replace(chr(39), chr(39) * 2)}'" for k, v in self.settings.items()]
        own = self.data_dir / SETTINGS_FILE
        own.write_text("# written by devstack.postgres at each start\n" + "".join(f"{x}\n" for x in lines))
        self._chown(own)
        conf = self.data_dir / "postgresql.conf"
        include = f"include_if_exists = '{SETTINGS_FILE}'"
        text = conf.read_text()
        if include not in text:
            conf.write_text(text.rstrip("\n") + "\n" + include + "\n")

    def _allow_samenet(self) -> None:
        """Let clients of the server's own subnet in (trust, as on loopback): a test network's hosts."""
        hba = self.data_dir / "pg_hba.conf"
        line = "host all all samenet trust  # devstack: the test network's hosts"
        text = hba.read_text()
        if line not in text:
            hba.write_text(text.rstrip("\n") + "\n" + line + "\n")

    def _ready(self) -> bool:
        if self.prefix:  # over the network, from inside the prefix (this process may not reach self.host)
            probe = [pg_bin("pg_isready"), "-q", "-h", self.host, "-p", str(self.port), "-d", "postgres",
                     "-U", SUPERUSER, "-t", "2"]
            return subprocess.run([*self.prefix, *probe], capture_output=True).returncode == 0
        try:
            with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def dsn(self, db: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        pw = f" password={password}" if password else ""
        return f"host={self.host} port={self.port} dbname={db} user={user}{pw}"

    def url(self, db: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql+psycopg://{user}@{self.host}:{self.port}/{db}"

    def local_dsn(self, db: str = "postgres", user: str = SUPERUSER) -> str:
        """Through the server's Unix socket (in the data directory): from this machine, whatever the network
        namespace of the caller or of the server."""
        return f"host={self.data_dir} port={self.port} dbname={db} user={user}"

    def local_url(self, db: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql+psycopg://{user}@/{db}?host={self.data_dir}&port={self.port}"

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.local_dsn("postgres") if self.prefix else self.dsn("postgres"), autocommit=True) as c:
            exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                c.execute(f'CREATE DATABASE "{name}"')

    def stop(self, mode: str = "fast") -> None:
        """Stop the server. ``mode="immediate"`` is a crash (no checkpoint), for chaos tests."""
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                self._server([pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]),
                capture_output=True,
            )

    def destroy(self) -> None:
        self.stop("immediate")
        if self._owned_tmp:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
