"""A private PostgreSQL 15 server on loopback, started by the project for dev, tests and the demo.

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
from pathlib import Path

import psycopg

from devstack.procs import free_port, port_in_use, wait_until

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
SUPERUSER = "postgres"


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

    def __init__(self, data_dir: Path | None = None, port: int | None = None, fsync: bool = True) -> None:
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="tvote-pg-")) / "data"
        self.port = port or free_port()
        self.fsync = fsync
        self._owned_tmp = data_dir is None
        self.log_file = self.data_dir.parent / "postgres.log"

    # Running as root: hand the files to the postgres user and run the binaries as it.
    def _as_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", SUPERUSER, "--", *argv]

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(SUPERUSER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def start(self) -> Postgres:
        if port_in_use(self.port):
            raise RuntimeError(f"port {self.port} is busy: another server is running there (stop it or pick --pg-port)")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._chown(self.data_dir.parent)
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._chown(self.data_dir)
            subprocess.run(
                self._as_user([pg_bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                               "-E", "UTF8", "--locale=C.UTF-8"]),
                check=True, capture_output=True,
            )
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.data_dir} "
            f"-c max_connections=200 -c shared_buffers=256MB -c fsync={'on' if self.fsync else 'off'} "
            f"-c synchronous_commit=on -c full_page_writes={'on' if self.fsync else 'off'}"
        )
        self.log_file.touch()
        self._chown(self.log_file)
        subprocess.run(
            self._as_user([pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-o", opts,
                           "-w", "-t", "60", "start"]),
            check=True, capture_output=True,
        )
        wait_until(self._ready, 30, "postgres")
        return self

    def _ready(self) -> bool:
        try:
            with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def dsn(self, db: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        pw = f" password={password}" if password else ""
        return f"host=127.0.0.1 port={self.port} dbname={db} user={user}{pw}"

    def url(self, db: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as c:
            exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                c.execute(f'CREATE DATABASE "{name}"')

    def stop(self, mode: str = "fast") -> None:
        """Stop the server. ``mode="immediate"`` is a crash (no checkpoint), for chaos tests."""
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                self._as_user([pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]),
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
