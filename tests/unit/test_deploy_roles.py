"""deploy/docker-compose.yml and `tvote up --network netns` describe one deployment (issue 18 item 6).

Both come from tvote.roles. This test holds them together without Docker and without starting anything:
each compose service (node1..4, projector, submitter) is rebuilt with tvote.roles from the compose file's
own names and paths and must equal its ``command`` exactly, carry the role's environment and the health
check at the role's endpoint; and the processes the netns runner builds (devstack.trustees.TrusteeCluster
on test-network hosts, tvote.up.service_processes on a netns placement) must have the same flags, in the
same order, the same environment variables and the same health endpoint. Change a flag on one side only
and this fails. On the Patroni members (deploy/docker-compose.patroni.yml merged over it) each role is the
same process with the members' multi-host DSN (``tvote.patroni_deploy.dsn``, target_session_attrs=read-write).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_files import variants

from devstack.trustees import TrusteeCluster
from tvote import patroni_deploy, roles
from tvote.up import service_processes

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DSN = "host=postgres port=5432 dbname=tvote user=tvote_app passfile=/run/secrets/pgpass"
ETCD_URLS = "http://etcd1:2379,http://etcd2:2379,http://etcd3:2379"
BOOTSTRAP = "${TVOTE_BOOTSTRAP:?node1 multiaddr}"
PROGRAM = {roles.TVOTE: ["tvote"], roles.SUBMITTER: ["python", "-m", "submitter"]}
DEPLOY_ONLY_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT"}  # Jaeger exists only in the compose stack


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]


def nodes(services: dict[str, Any]) -> list[str]:
    return sorted(n for n in services if n.startswith("node"))


def compose_side(services: dict[str, Any], dsn: str = DSN) -> dict[str, roles.Process]:
    """Each tvote service as tvote.roles builds it from the compose file's names and secret paths."""
    out = {}
    for i, name in enumerate(nodes(services)):
        out[name] = roles.node(roles.Place.own_host(name), name, f"/run/secrets/{name}_key",
                               "/run/secrets/api_token", dsn, ETCD_URLS, f"/var/lib/tvote/{name}.journal",
                               [BOOTSTRAP] if i else [],
                               (f"/run/secrets/{name}_api_crt", f"/run/secrets/{name}_api_key"))
    out["projector"] = roles.projector(roles.Place.own_host("projector"), dsn)
    out["submitter"] = roles.submitter(roles.Place.own_host("submitter"), dsn, "etcd1:2379,etcd2:2379,etcd3:2379",
                                       "${TVOTE_RPC:-http://anvil:8545}",
                                       "${TVOTE_CONTRACT:?ThresholdRecord contract address}",
                                       "${TVOTE_CHAIN_ID:-31337}", "/run/secrets/submitter_key", "submitter-1")
    return out


@dataclass
class _Host:  # what TrusteeCluster reads of a devstack.netns.Host
    ip: str
    prefix: tuple[str, ...] = ()


class _Placement:  # what tvote.up reads of a netns tvote.placement.Placement
    isolated = True

    def ip(self, role: str) -> str:
        return {"projector": "10.9.9.11", "submitter": "10.9.9.12"}[role]


@pytest.fixture(scope="module")
def netns_side(tmp_path_factory: pytest.TempPathFactory) -> dict[str, roles.Process]:
    """The processes the netns runner starts: trustees (TrusteeCluster on hosts) and the two services (up)."""
    cluster = TrusteeCluster(4, 3, "host=10.9.9.3 dbname=tvote", "http://10.9.9.4:2379,http://10.9.9.5:2379",
                             base_dir=tmp_path_factory.mktemp("nodes"),
                             hosts=[_Host(f"10.9.9.{7 + i}") for i in range(4)])  # type: ignore[list-item]
    first = cluster.trustees[0]
    out = {f"node{i + 1}": cluster.process(t, [] if i == 0 else [f"/ip4/10.9.9.7/tcp/4001/p2p/{first.peer_id}"])
           for i, t in enumerate(cluster.trustees)}
    out.update(service_processes(_Placement(), "host=10.9.9.3 dbname=tvote", "10.9.9.4:2379",  # type: ignore[arg-type]
                                 "http://10.9.9.6:8545", "0x" + "ab" * 20, "/tmp/submitter.key"))
    return out


def flags(args: list[str]) -> list[str]:
    return [a for a in args if a.startswith("--")]


def health_of(service: dict[str, Any]) -> tuple[int, str]:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "curl", "-f"], test
    url = test[3]
    assert url.startswith("http://localhost:"), url
    port, _, path = url.removeprefix("http://localhost:").partition("/")
    return int(port), "/" + path


def test_every_tvote_service_is_a_role(services):
    tvote = {n for n, s in services.items() if s.get("image") == "threshold-vote:latest" and n != "migrate"}
    assert tvote == {*nodes(services), "projector", "submitter"}
    assert len(nodes(services)) == 4


def test_each_compose_command_is_the_roles_description_exactly(services):
    for name, spec in compose_side(services).items():
        assert services[name]["command"] == [*PROGRAM[spec.program], *spec.args], name


def test_each_compose_service_has_the_roles_environment_and_health_check(services):
    for name, spec in compose_side(services).items():
        env = services[name]["environment"]
        assert {k: env[k] for k in spec.env} == spec.env, name
        assert set(env) - set(spec.env) <= DEPLOY_ONLY_ENV, (name, set(env) - set(spec.env))
        assert spec.health is not None and health_of(services[name]) == spec.health, name


def test_the_netns_runner_starts_the_same_processes(services, netns_side):
    compose = compose_side(services)
    assert set(netns_side) == set(compose)
    for name, ours in netns_side.items():
        theirs = compose[name]
        assert ours.program == theirs.program, name
        assert flags(ours.args) == flags(theirs.args), name  # same options, same order
        assert ours.args[0] == theirs.args[0], name  # same subcommand
        assert set(ours.env) == set(theirs.env), name
        assert ours.health == theirs.health == health_of(services[name]), name
        if ours.program == roles.TVOTE and ours.args[0] == "node":  # listening as in a container
            for flag in ("--listen", "--api-listen", "--metrics-listen"):
                assert ours.args[ours.args.index(flag) + 1] == theirs.args[theirs.args.index(flag) + 1], flag
            ip = ours.args[ours.args.index("--advertise") + 1].split("/")[2]
            assert ours.args[ours.args.index("--advertise") + 1] == f"/ip4/{ip}/tcp/{roles.P2P_PORT}"



def test_on_patroni_each_role_is_the_same_process_with_the_members_dsn(services):
    patroni = variants()["patroni"]["services"]
    for name, spec in compose_side(patroni, patroni_deploy.dsn()).items():
        assert patroni[name]["command"] == services[name]["command"] == [*PROGRAM[spec.program], *spec.args], name
        env = patroni[name]["environment"]
        assert {k: env[k] for k in spec.env} == spec.env, name
        assert set(env) - set(spec.env) <= DEPLOY_ONLY_ENV, name
        assert spec.env["TVOTE_DSN"].endswith("target_session_attrs=read-write"), name
        assert health_of(patroni[name]) == spec.health, name
