"""The compose stack on Patroni (deploy/docker-compose.patroni.yml over deploy/docker-compose.yml) is the
devstack's Patroni cluster (devstack/patroni.py), placed in containers. No Docker here: the files are
checked as compose and Patroni read them.

- the members' configuration files are what ``tvote.patroni_deploy`` renders (a stale or hand-edited file
  fails), and differ from a devstack member's configuration only where things are (addresses,
  directories, pg_hba, WAL archiving), never in how Patroni behaves (synchronous mode, timing, rewind);
- Patroni's etcd keys cannot overlap the service's: the prefix every role is given in the compose file is
  checked against the members' namespace/scope, a colliding one is refused when rendering, and no member
  may move its keys through Patroni's environment overrides;
- every role gets the multi-host DSN naming every member with ``target_session_attrs=read-write``;
  migrate the same as a URL, after the members; the single ``postgres`` service is off;
- the image pins the Patroni the devstack runs, and its scripts use the secrets and stanza given.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_files import DEPLOY, PATRONI, load, variants
from psycopg.conninfo import conninfo_to_dict

from devstack import patroni as devstack_patroni
from devstack.patroni import PatroniCluster, PrefixCollision, Timing, check_prefixes, key_root
from tvote import patroni_deploy

ROLES = ("node1", "node2", "node3", "node4", "projector", "submitter")
# Where a compose member differs from a devstack member, and why (anything else differing fails the parity test)
PLACE_KEYS = {
    ("restapi", "listen"), ("restapi", "connect_address"),  # container names, all interfaces
    ("etcd3", "hosts"),  # the stack's etcd services
    ("bootstrap", "post_bootstrap"),  # the app role and database, as init-app-role.sh for `postgres`
    ("postgresql", "listen"), ("postgresql", "connect_address"), ("postgresql", "data_dir"),
    ("postgresql", "bin_dir"), ("postgresql", "pgpass"),
    ("postgresql", "parameters"),  # its socket directory, and WAL archiving (it names the data directory)
    ("postgresql", "pg_hba"),  # passwords over the backend network instead of loopback trust
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return variants()["patroni"]


def members(compose: dict[str, Any]) -> list[str]:
    return sorted(n for n, s in compose["services"].items() if s.get("build", {}).get("context") == "./patroni")


def mounted_config(compose: dict[str, Any], member: str) -> dict[str, Any]:
    for vol in compose["services"][member]["volumes"]:
        src, dst = vol.split(":")[:2]
        if dst == "/etc/patroni/patroni.yml":
            return yaml.safe_load((DEPLOY / src).read_text())
    raise AssertionError(f"{member} mounts no Patroni configuration")


def _diff(a: Any, b: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(a, dict) and isinstance(b, dict):
        return {d for k in a.keys() | b.keys() for d in _diff(a.get(k), b.get(k), (*path, k))}
    return set() if a == b else {path}


@pytest.fixture()
def devstack_member_config(monkeypatch, tmp_path) -> dict[str, Any]:
    """A devstack member's configuration, as ``tvote up --postgres patroni`` writes it (fsync on, defaults)."""
    monkeypatch.setattr(devstack_patroni, "patroni_bin", lambda: "/opt/tvote-patroni/bin/patroni")
    cluster = PatroniCluster(["http://127.0.0.1:2379"], size=3, base_dir=tmp_path)
    return cluster._config(cluster.members[0])


def test_the_committed_member_files_are_what_the_generator_renders():
    assert patroni_deploy.stale() == [], "run: python -m tvote.patroni_deploy"
    assert patroni_deploy.main(["--check"]) == 0


def test_a_hand_edited_member_file_is_found_stale(tmp_path):
    for m, c in patroni_deploy.member_configs().items():
        (tmp_path / f"{m}.yml").write_text(patroni_deploy.render(c))
    assert patroni_deploy.stale(tmp_path) == []
    (tmp_path / "pg1.yml").write_text(patroni_deploy.render(patroni_deploy.member_configs()["pg1"])
                                      .replace("synchronous_mode_strict: true", "synchronous_mode_strict: false"))
    assert patroni_deploy.stale(tmp_path) == ["pg1.yml"]


def test_each_member_mounts_its_own_file(compose):
    assert members(compose) == ["pg0", "pg1", "pg2"] == list(patroni_deploy.MEMBERS)
    for m in members(compose):
        cfg = mounted_config(compose, m)
        assert cfg["name"] == m
        assert cfg["postgresql"]["connect_address"] == f"{m}:{patroni_deploy.PG_PORT}"
        assert cfg["restapi"]["connect_address"] == f"{m}:{patroni_deploy.API_PORT}"


def test_a_compose_member_behaves_as_a_devstack_member(compose, devstack_member_config):
    ours = mounted_config(compose, "pg0")
    behaviour = {d for d in _diff(ours, devstack_member_config) if d[:2] not in PLACE_KEYS}
    assert not behaviour, behaviour
    assert ours["bootstrap"]["dcs"] == devstack_member_config["bootstrap"]["dcs"]  # the whole behaviour, exactly
    dcs = ours["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True and dcs["synchronous_mode_strict"] is True
    assert dcs["synchronous_node_count"] == 1 and dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (6, 1, 2)
    Timing(dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"])  # Patroni's rule holds
    assert dcs["postgresql"]["parameters"]["fsync"] == "on"
    # the socket directory is the only local parameter the devstack sets: the compose members add archiving
    local = ours["postgresql"]["parameters"]
    assert set(devstack_member_config["postgresql"]["parameters"]) == {"unix_socket_directories"}
    assert local["archive_mode"] == "on" and local["archive_timeout"] == patroni_deploy.ARCHIVE_TIMEOUT
    assert local["archive_command"] == patroni_deploy.STANZA.archive_command(
        Path(ours["postgresql"]["data_dir"]), patroni_deploy.PGBACKREST)
    assert not any("trust" in line and line.startswith("host") for line in ours["postgresql"]["pg_hba"])


def test_the_members_use_the_stacks_etcd(compose):
    etcd = {f"{s}:2379" for s in ("etcd1", "etcd2", "etcd3") if s in compose["services"]}
    for m in members(compose):
        cfg = mounted_config(compose, m)
        assert set(cfg["etcd3"]["hosts"]) == etcd and cfg["etcd3"]["protocol"] == "http"
        assert "etcd" not in cfg  # the v2 API is off in etcd >= 3.4
        assert set(compose["services"][m]["depends_on"]) >= {"etcd1", "etcd2", "etcd3"}


def service_prefixes(compose: dict[str, Any]) -> set[str]:
    out = set()
    for s in compose["services"].values():
        cmd = s.get("command") or []
        out |= {cmd[i + 1] for i, a in enumerate(cmd) if a == "--etcd-prefix"}
    return out


def test_patroni_keys_cannot_overlap_the_services(compose):
    prefixes = service_prefixes(compose)
    assert prefixes == {devstack_patroni.SERVICE_PREFIX}  # every role that uses etcd names its prefix
    for m in members(compose):
        cfg = mounted_config(compose, m)
        check_prefixes(cfg["namespace"], cfg["scope"], sorted(prefixes))
        assert key_root(cfg["namespace"], cfg["scope"]) == "/patroni/tvote-pg/"
        # Patroni's environment overrides its file: no member may move its keys (or its name) that way
        env = compose["services"][m].get("environment", {})
        assert not [k for k in env if re.match(r"PATRONI_(SCOPE|NAMESPACE|NAME|ETCD)", k)], env


@pytest.mark.parametrize(("namespace", "scope", "prefixes"), [
    ("/", "tvote", ["/tvote"]),  # Patroni's keys inside the service's
    ("/tvote", "tvote-pg", ["/tvote"]),
    ("/patroni", "tvote-pg", ["/patroni"]),  # the service's keys inside Patroni's
    ("/patroni", "tvote-pg", ["/"]),  # the whole key space
    ("/patroni", "", ["/tvote"]),  # no scope
])
def test_a_colliding_prefix_is_refused_and_nothing_is_written(namespace, scope, prefixes, tmp_path):
    with pytest.raises(PrefixCollision):
        patroni_deploy.member_configs(namespace=namespace, scope=scope, service_prefixes=prefixes)
    with pytest.raises(PrefixCollision):
        patroni_deploy.write(tmp_path / "out", namespace=namespace, scope=scope, service_prefixes=prefixes)
    assert not (tmp_path / "out").exists()


def test_one_member_is_refused():
    with pytest.raises(ValueError, match="at least one standby"):
        patroni_deploy.member_configs(members=["pg0"])


def test_every_role_gets_the_multi_host_dsn(compose):
    services = compose["services"]
    hosts = members(compose)
    for name in ROLES:
        dsn = services[name]["environment"]["TVOTE_DSN"]
        assert dsn == patroni_deploy.dsn(), name
        parts = conninfo_to_dict(dsn)  # libpq's own parser (raises on a malformed DSN)
        assert parts["host"].split(",") == hosts, name
        assert parts["port"].split(",") == ["5432"] * len(hosts), name
        assert parts["target_session_attrs"] == "read-write", name
        assert (parts["dbname"], parts["user"], parts["passfile"]) == ("tvote", "tvote_app", "/run/secrets/pgpass")
    assert "postgres" not in str([services[n]["environment"] for n in ROLES]).replace("postgresql", "")


def test_migrate_runs_on_the_members_and_the_single_server_is_off(compose):
    migrate = compose["services"]["migrate"]
    url = migrate["command"][migrate["command"].index("--url") + 1]
    assert url == patroni_deploy.url()
    assert re.findall(r"host=([^&:]+):5432", url) == members(compose)
    assert url.endswith("target_session_attrs=read-write")
    assert set(migrate["depends_on"]) == set(members(compose))  # not `postgres`: !override replaced it
    assert all(d["condition"] == "service_healthy" for d in migrate["depends_on"].values())
    assert compose["services"]["postgres"]["profiles"] == ["single-postgres"]  # started only when asked for
    assert not [n for n, s in compose["services"].items() if "postgres" in s.get("depends_on", {})]


def test_the_override_needs_its_merge_tags():
    """Without !override migrate would still wait for `postgres`, which is off: the tag must stay."""
    raw = (PATRONI).read_text()
    assert "depends_on: !override" in raw
    assert load(PATRONI)["services"]["migrate"]["depends_on"].__class__.__name__ == "Override"


def test_the_image_pins_the_devstacks_patroni_and_its_scripts_match():
    dockerfile = (DEPLOY / "patroni" / "Dockerfile").read_text()
    assert re.search(r"^FROM postgres:15-bookworm$", dockerfile, re.M)
    assert f"ARG PATRONI_VERSION={devstack_patroni.PATRONI_VERSION}" in dockerfile
    assert '"patroni[etcd3]==${PATRONI_VERSION}"' in dockerfile
    assert '"ydiff==1.2"' in dockerfile  # patronictl (list, switchover) does not import with ydiff >= 1.3
    for src in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
        assert (DEPLOY / "patroni" / src).exists(), src
    entry = (DEPLOY / "patroni" / "entrypoint.sh").read_text()
    assert "exec patroni /etc/patroni/patroni.yml" in entry
    post = (DEPLOY / "patroni" / "post-bootstrap.sh").read_text()
    stanza = " ".join([*patroni_deploy.STANZA.options(), f"--pg1-path={patroni_deploy.DATA_DIR}", "stanza-create"])
    assert stanza in post.replace("\\\n  ", "")
    assert "CREATE ROLE tvote_app LOGIN PASSWORD :'pw'" in post  # as deploy/postgres/init-app-role.sh
    assert "CREATE ROLE tvote_app LOGIN PASSWORD :'pw'" in (DEPLOY / "postgres" / "init-app-role.sh").read_text()
    assert patroni_deploy.POST_BOOTSTRAP == "/usr/local/bin/tvote-post-bootstrap"
    assert "COPY post-bootstrap.sh /usr/local/bin/tvote-post-bootstrap" in dockerfile


def test_the_members_get_their_secrets_from_files(compose):
    readme = (DEPLOY / "secrets" / "README.md").read_text()
    scripts = "".join((DEPLOY / "patroni" / f).read_text() for f in ("entrypoint.sh", "post-bootstrap.sh"))
    for m in members(compose):
        secrets = compose["services"][m]["secrets"]
        assert set(secrets) == {"pg_owner_password", "pg_app_password", "pg_replication_password"}
        for s in secrets:
            assert f"/run/secrets/{s}" in scripts, s
            assert compose["secrets"][s]["file"].removeprefix("./secrets/") in readme, s
    for m in members(compose):  # no password in a member's configuration or environment
        cfg = mounted_config(compose, m)
        assert "password" not in str(cfg["postgresql"]["authentication"])
        assert not [k for k in compose["services"][m].get("environment", {}) if "PASSWORD" in k]


@pytest.mark.skipif(devstack_patroni.patroni_bin() is None, reason="Patroni not installed (./dev bootstrap)")
def test_patroni_itself_accepts_each_member_file(compose, tmp_path):
    """``patroni --validate-config`` (Patroni 3.0.4, the pinned version) on each file as mounted. Its only
    check that needs the stack is that the etcd hosts answer TCP: they are pointed at a socket listening here."""
    with socket.socket() as etcd:
        etcd.bind(("127.0.0.1", 0))
        etcd.listen()
        here = f"127.0.0.1:{etcd.getsockname()[1]}"
        for m in members(compose):
            cfg = mounted_config(compose, m)
            cfg["etcd3"]["hosts"] = [here] * len(cfg["etcd3"]["hosts"])
            (path := tmp_path / f"{m}.yml").write_text(yaml.safe_dump(cfg))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRONI_", "PYTHON"))}
            run = subprocess.run([devstack_patroni.patroni_bin(), "--validate-config", str(path)], env=env,
                                 capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, (m, run.stdout, run.stderr)


@pytest.mark.parametrize("script", ["entrypoint.sh", "post-bootstrap.sh"])
def test_the_image_scripts_are_executable_posix_shell(script):
    path = DEPLOY / "patroni" / script
    assert os.access(path, os.X_OK), f"{script} is COPY'd with its mode: it must be executable"
    assert path.read_text().startswith("#!/bin/sh\n") and "set -eu" in path.read_text()
    run = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
