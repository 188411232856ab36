"""deploy/: the compose file is valid per the compose specification's JSON schema (no Docker engine
here), carries seed section 12's services, healthchecks and limits, runs commands the real CLIs
accept, and the Dockerfile copies files that exist. Every check runs on both variants: the file alone
(one Postgres server) and with deploy/docker-compose.patroni.yml merged over it (the Patroni members;
tests/unit/test_deploy_patroni.py checks what is particular to them)."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from compose_files import variants

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
SCHEMA = DEPLOY / "schema" / "compose-spec.json"
ONE_SHOT = {"migrate"}
MEMORY = {  # seed table 7
    "etcd1": "2g", "etcd2": "2g", "etcd3": "2g", "postgres": "4g", "node1": "512m", "submitter": "512m",
    "prometheus": "2g", "grafana": "512m", "jaeger": "1g",
}
SEED_HEALTH = {  # seed 12.3, verbatim
    "etcd1": (["CMD", "etcdctl", "endpoint", "health"], "10s", "5s", 3),
    "postgres": (["CMD", "pg_isready", "-U", "postgres"], "10s", "5s", 3),
    "node1": (["CMD", "curl", "-f", "http://localhost:8080/health"], "30s", "10s", 3),
}


@pytest.fixture(scope="module", params=["single", "patroni"])
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    return variants()[request.param]  # YAML merge keys (<<) resolved, the override merged, as compose does


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def nodes(compose: dict[str, Any]) -> list[str]:
    return sorted(s for s in compose["services"] if re.fullmatch(r"node\d+", s))


def interpolate(value: str) -> str:
    """Compose-style ${VAR:-default} / ${VAR:?error} with no variables set (defaults, or a dummy)."""
    value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), value)
    return re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: f"<{m.group(1)}>", value)


def test_schema_file_is_the_compose_spec_with_its_source_noted() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification" and "services" in schema["properties"]
    note = (DEPLOY / "schema" / "SOURCE.md").read_text()
    assert "github.com/compose-spec/compose-spec" in note and re.search(r"[0-9a-f]{40}", note)


def test_compose_file_is_valid(compose: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("breakage", [
    lambda c: c["services"]["etcd1"].__setitem__("healthcheck", {"test": ["CMD", "true"], "intervall": "1s"}),
    lambda c: c["services"]["node1"].__setitem__("depends_on", {"etcd1": {"condition": "sometimes"}}),
    lambda c: c.__setitem__("servicez", {}),
])
def test_the_schema_catches_mistakes(compose: dict[str, Any], validator: jsonschema.Draft7Validator, breakage) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert list(validator.iter_errors(broken)), "the schema should reject this"


def test_the_seed_stack(compose: dict[str, Any]) -> None:
    services = set(compose["services"])
    assert {"etcd1", "etcd2", "etcd3", "postgres", "projector", "submitter", "prometheus", "grafana",
            "jaeger"} <= services
    assert len(nodes(compose)) >= 3
    initial = {c.split("=", 1)[1] for s in ("etcd1", "etcd2", "etcd3")
               for c in compose["services"][s]["command"] if c.startswith("--initial-cluster=")}
    assert len(initial) == 1 and initial.pop().count("=http://") == 3  # one 3-member Raft cluster
    for s in ("etcd1", "etcd2", "etcd3"):
        assert "--max-txn-ops=8192" in compose["services"][s]["command"]  # docs/decisions.md


def test_healthchecks(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name not in ONE_SHOT:
            assert "healthcheck" in svc, f"{name} has no healthcheck"
    for name, (test, interval, timeout, retries) in SEED_HEALTH.items():
        h = compose["services"][name]["healthcheck"]
        assert (h["test"], h["interval"], h["timeout"], h["retries"]) == (test, interval, timeout, retries), name
    for n in nodes(compose):
        assert compose["services"][n]["healthcheck"]["test"] == SEED_HEALTH["node1"][0]


def test_memory_limits(compose: dict[str, Any]) -> None:
    for name, mem in MEMORY.items():
        assert compose["services"][name]["deploy"]["resources"]["limits"]["memory"] == mem, name
    for n in nodes(compose):
        assert compose["services"][n]["deploy"]["resources"]["limits"]["memory"] == "512m"


def test_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)
        for sec in svc.get("secrets", []):
            assert (sec if isinstance(sec, str) else sec["source"]) in compose["secrets"], (name, sec)
        for net in svc.get("networks", []):
            assert net in compose["networks"], (name, net)
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: bind source {src} missing"
            else:
                assert src in compose["volumes"], (name, src)
    for sec in compose["secrets"].values():  # created by the operator (secrets/README.md), never committed
        assert (DEPLOY / sec["file"]).parent == DEPLOY / "secrets"
    assert (DEPLOY / "secrets" / "README.md").exists()


def test_prometheus_scrapes_compose_services(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    hosts = {t.split(":")[0] for t in targets} - {"localhost"}
    assert hosts <= set(compose["services"]), hosts - set(compose["services"])
    for n in [*nodes(compose), "projector", "submitter"]:
        assert f"{n}:8080" in targets, n
        env = compose["services"][n]["environment"]
        cmd = compose["services"][n]["command"]
        assert cmd[cmd.index("--metrics-listen") + 1] == "0.0.0.0:8080", n
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"


def test_role_commands_are_accepted_by_the_real_clis(compose: dict[str, Any], monkeypatch) -> None:
    import typer.main

    from tvote.cli import app

    group = typer.main.get_command(app)
    services = compose["services"]
    for name in [*nodes(compose), "projector", "migrate"]:
        cmd = [interpolate(c) for c in services[name]["command"]]
        assert cmd[0] == "tvote", name
        for k, v in services[name].get("environment", {}).items():
            monkeypatch.setenv(k, v)  # TVOTE_DSN etc. are read from the environment, as in the container
        sub = group.commands[cmd[1]]  # type: ignore[attr-defined]
        sub.make_context(f"tvote {cmd[1]}", cmd[2:])  # raises on an unknown or missing option
    assert services["projector"]["command"][:2] == ["tvote", "projector"]
    for n in nodes(compose):
        assert services[n]["command"][:2] == ["tvote", "node"]

    from submitter.__main__ import parse

    sub_cmd = [interpolate(c) for c in services["submitter"]["command"]]
    assert sub_cmd[:3] == ["python", "-m", "submitter"]
    args = parse(sub_cmd[3:])
    assert args.rpc == "http://anvil:8545" and args.chain_id == 31337


def test_dockerfile(compose: dict[str, Any]) -> None:
    build = compose["services"]["node1"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert dockerfile == DEPLOY / "Dockerfile"
    lines = _instructions(dockerfile.read_text())
    froms = [a for i, a in lines if i == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)
    copies = [shlex.split(a) for i, a in lines if i == "COPY"]
    assert copies
    for parts in copies:
        if any(p.startswith("--from") for p in parts):
            continue
        for src in [p for p in parts if not p.startswith("--")][:-1]:
            assert (context / src).exists(), f"COPY source {src} missing from the build context"
    assert any(i == "RUN" and "pip install" in a for i, a in lines)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


def _instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    out = []
    for ln in joined.splitlines():
        if ln.strip():
            instr, _, args = ln.strip().partition(" ")
            out.append((instr.upper(), args.strip()))
    return out
