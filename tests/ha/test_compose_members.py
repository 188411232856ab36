"""The compose stack's Patroni members, run: deploy/patroni/pgN.yml as ``tvote.patroni_deploy`` renders them,
started through the image's own entrypoint and post-bootstrap scripts (deploy/patroni/*.sh), on loopback.

There is no Docker engine here, so what only a container gives is substituted, and nothing else: the
addresses (127.0.0.1 and free ports instead of pgN:5432/8008), the directories (the data directory, the
pgBackRest repository, the secrets, the socket, each under a temporary directory), the stanza-create's
port and socket (a container has the defaults), and the scope (a fresh one on the session's etcd).
Everything else is the compose members' own: password (scram-sha-256) authentication for replication and
every network login with the passwords from the secret files, fsync on, strict synchronous replication,
the app role and the ``tvote`` database from post_bootstrap, WAL archived into the pgBackRest stanza, the
roles' multi-host DSN, migrations through the multi-host URL, and a planned switchover.
"""

from __future__ import annotations

import copy
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack import patroni as dp
from tvote import db
from tvote import patroni_deploy as pd

SCRIPTS = pd.DEPLOY / "patroni"
PASSWORDS = {"pg_owner_password": "owner-" + uuid.uuid4().hex, "pg_app_password": "app-" + uuid.uuid4().hex,
             "pg_replication_password": "repl-" + uuid.uuid4().hex}

pytestmark = [
    pytest.mark.skipif(dp.patroni_bin() is None, reason="Patroni not installed (./dev bootstrap)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="runs the members as the postgres user (root needed)"),
]


class ComposeMembers(dp.PatroniCluster):
    """``PatroniCluster``'s process handling, with the compose members' configuration and scripts."""

    def __init__(self, etcd: list[str], base: Path, secrets: Path, repo: Path) -> None:
        super().__init__(etcd, size=len(pd.MEMBERS), base_dir=base, scope=f"{dp.SCOPE}-{uuid.uuid4().hex[:6]}")
        self.secrets, self.repo = secrets, repo
        self.rendered = pd.member_configs(scope=self.scope)

    def _config(self, m: dp.Member) -> dict:
        c = copy.deepcopy(self.rendered[m.name])
        c["etcd3"]["hosts"] = self.etcd_endpoints
        c["restapi"] = {"listen": f"127.0.0.1:{m.api_port}", "connect_address": f"127.0.0.1:{m.api_port}"}
        pg = c["postgresql"]
        pg.update(listen=f"127.0.0.1:{m.port}", connect_address=f"127.0.0.1:{m.port}", data_dir=str(m.data_dir),
                  pgpass=str(m.base / "pgpass"))
        pg["parameters"]["unix_socket_directories"] = str(m.base)
        pg["parameters"]["archive_command"] = self._paths(pg["parameters"]["archive_command"], m)
        post = self._paths((SCRIPTS / "post-bootstrap.sh").read_text(), m).replace(
            "stanza-create", f"--pg1-port={m.port} --pg1-socket-path={m.base} stanza-create")
        c["bootstrap"]["post_bootstrap"] = str(self._script(m, "post-bootstrap.sh", post))
        entry = self._paths((SCRIPTS / "entrypoint.sh").read_text(), m).replace("/etc/patroni/patroni.yml",
                                                                                   str(m.config))
        self._script(m, "entrypoint.sh", entry)
        return c

    def _paths(self, text: str, m: dp.Member) -> str:
        return (text.replace("/run/secrets", str(self.secrets)).replace(str(pd.STANZA.repo), str(self.repo))
                .replace(pd.DATA_DIR, str(m.data_dir)).replace(pd.PGBACKREST, "pgbackrest"))

    def _script(self, m: dp.Member, name: str, text: str) -> Path:
        m.base.mkdir(parents=True, exist_ok=True)
        (path := m.base / name).write_text(text)
        path.chmod(0o755)
        return path

    def _argv(self, m: dp.Member) -> list[str]:  # the image's ENTRYPOINT, as the postgres user
        return ["setpriv", f"--reuid={dp.SUPERUSER}", f"--regid={dp.SUPERUSER}", "--init-groups", "--",
                "sh", str(m.base / "entrypoint.sh")]


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the postgres user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="tvote-compose-members-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_compose_members_boot_replicate_archive_and_switch_over(etcd_server, base, monkeypatch):
    tmp_path = base
    pg_user = pwd.getpwnam(dp.SUPERUSER)
    for d in (tmp_path, tmp_path / "repo", tmp_path / "pg"):
        d.mkdir(exist_ok=True)
        os.chown(d, pg_user.pw_uid, pg_user.pw_gid)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, pw in PASSWORDS.items():
        (secrets / name).write_text(pw + "\n")
        (secrets / name).chmod(0o644)
    client = tmp_path / "pgpass"  # the roles' pgpass (deploy/secrets/README.md: any host)
    client.write_text(f"*:*:*:postgres:{PASSWORDS['pg_owner_password']}\n"
                      f"*:*:*:tvote_app:{PASSWORDS['pg_app_password']}\n")
    client.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(client))
    monkeypatch.setenv("PATH", f"{Path(dp.patroni_bin() or '').parent}:{pd.BIN_DIR}:{os.environ['PATH']}")

    cluster = ComposeMembers(etcd_server.endpoints, tmp_path / "pg", secrets, tmp_path / "repo")
    try:
        cluster.start(timeout=120)
        assert sorted(cluster.roles().values()) == ["leader", "replica", "sync_standby"]
        with psycopg.connect(cluster.dsn("postgres"), connect_timeout=5) as c:  # the owner's password
            settings = dict(c.execute("SELECT name, setting FROM pg_settings WHERE name IN ('archive_mode', "
                                      "'fsync', 'synchronous_standby_names', 'synchronous_commit')").fetchall())
            assert settings["archive_mode"] == "on" and settings["fsync"] == "on"
            assert settings["synchronous_commit"] == "on" and settings["synchronous_standby_names"] not in ("", "*")
            states = c.execute("SELECT sync_state FROM pg_stat_replication").fetchall()
            assert sorted(s for (s,) in states) == ["async", "sync"]  # both standbys in, by their password
        with pytest.raises(psycopg.OperationalError):  # the network asks for a password: none, no login
            psycopg.connect(cluster.member_dsn(cluster.wait_primary()) + " passfile=/dev/null", connect_timeout=5)

        db.upgrade(cluster.url("tvote"))  # what compose's migrate does, through the multi-host URL
        with psycopg.connect(cluster.dsn("tvote", db.APP_ROLE), connect_timeout=5) as c:  # post_bootstrap's role
            assert c.execute("SELECT current_user, pg_is_in_recovery()").fetchone() == (db.APP_ROLE, False)
            c.execute("SELECT count(*) FROM events").fetchone()  # the migration granted it the log
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as c:
            segment = c.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        archived = _wait_archived(tmp_path / "repo", segment)
        assert archived >= segment, (archived, segment)

        old = cluster.wait_primary()
        new = cluster.switchover()
        assert new is not old
        deadline = time.monotonic() + 60
        while True:  # the roles' DSN finds the new primary; its commits wait for a synchronous standby
            try:
                with psycopg.connect(cluster.dsn("tvote", db.APP_ROLE), connect_timeout=5) as c:
                    assert c.info.port == new.port
                    break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "no writable member after the switchover"
                time.sleep(0.5)
        cluster.heal(120)
    finally:
        cluster.destroy()


def _wait_archived(repo: Path, segment: str, timeout: float = 60) -> str:
    """The newest WAL segment in the stanza's archive, once it has ``segment`` (pgBackRest's own ``info``)."""
    deadline = time.monotonic() + timeout
    newest = ""
    while time.monotonic() < deadline:
        out = subprocess.run(["runuser", "-u", dp.SUPERUSER, "--", "pgbackrest", f"--stanza={pd.STANZA.name}",
                              f"--repo1-path={repo}", "--output=json", "info"], capture_output=True, text=True)
        if out.returncode == 0:
            archives = json.loads(out.stdout)[0]["archive"]
            newest = max((a["max"] for a in archives if a.get("max")), default="")
            if newest >= segment:
                return newest
        time.sleep(1)
    return newest
