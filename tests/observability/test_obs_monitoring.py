"""monitoring/: alert rules and their unit tests pass promtool; the dashboard and the rules only use
metrics that exist; and a real Prometheus scraping a real /metrics evaluates all of it.

promtool and prometheus come from Debian's ``prometheus`` package (apt-get install prometheus).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from obs_scenario import recorded, scenario
from prometheus_client import CollectorRegistry

from observability import metrics as om
from projections import metrics as pm

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "monitoring"
DASHBOARD = MON / "grafana" / "dashboard.json"
# Scraped from etcd, postgres-exporter and Prometheus itself, not defined by us.
EXTERNAL = {"up", "etcd_server_has_leader", "pg_up"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
                "unless", "inf", "nan"}
SEED_ALERTS = {  # seed 13.3, R10 and ours -> severity
    "HighByzantineRate": "critical",
    "TransactionAbortedByzantine": "critical",
    "EtcdClusterUnhealthy": "critical",
    "PostgreSQLDown": "critical",
    "HighSubmissionLatency": "warning",
    "LowReputationNodes": "warning",
    "NetworkPartitionSuspected": "warning",
    "GarbageCollectionFailed": "warning",
    "QuorumImpossible": "critical",
    "ProjectorStalled": "warning",  # ours: the tables operators query went stale
    "ReputationBelowFloor": "warning",  # R9 as revised: silence alerts, it bans only if opted in
    "SignerRefusals": "warning",  # R14: a trustee refused to sign a second value
    "LogEntryVoid": "critical",  # R13: forged, edited, or false entries in the log
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool missing: apt-get install -y prometheus")
    r = subprocess.run([exe, *args], cwd=MON, capture_output=True, text=True, timeout=60)
    print(r.stdout, r.stderr)
    return r


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (identifiers that are not functions, keywords or labels)."""
    e = re.sub(r"\$__\w+", "1m", expr)
    e = re.sub(r'"[^"]*"', '""', e)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\boffset\s+\w+", "", e)
    found = set(re.findall(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()", e))
    return {n for n in found if n.lower() not in PROMQL_WORDS}


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MON / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def our_families() -> set[str]:
    return {f.name for f in om.Metrics(CollectorRegistry()).registry.collect()}


# --- promtool ------------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", "alerts.yml")
    assert r.returncode == 0 and f"SUCCESS: {len(SEED_ALERTS)} rules found" in r.stdout


def test_promtool_test_rules() -> None:
    r = promtool("test", "rules", "alerts_test.yml")
    assert r.returncode == 0 and "SUCCESS" in r.stdout


def test_promtool_check_config() -> None:
    r = promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0 and "is valid prometheus config file syntax" in r.stdout


# --- what the files refer to ---------------------------------------------------------------------


def test_the_seed_alerts_with_their_severities() -> None:
    got = {r["alert"]: r["labels"]["severity"] for r in alert_rules()}
    assert got == SEED_ALERTS
    for r in alert_rules():
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    doc = yaml.safe_load((MON / "alerts_test.yml").read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for t in doc["tests"]:
        for a in t["alert_rule_test"]:
            (fires if a["exp_alerts"] else quiet).add(a["alertname"])
    assert fires == set(SEED_ALERTS), set(SEED_ALERTS) - fires
    assert quiet == set(SEED_ALERTS), set(SEED_ALERTS) - quiet


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, operation) (rate(etcd_operation_duration_seconds_bucket'
            '{outcome="ok"}[$__rate_interval]))) > 5 and time() - gc_last_success_timestamp_seconds offset 5m')
    assert metric_names(expr) == {"etcd_operation_duration_seconds_bucket", "gc_last_success_timestamp_seconds"}


def test_rules_and_dashboard_use_only_defined_metrics() -> None:
    known = om.exposed_names(om.Metrics(CollectorRegistry()).registry) | EXTERNAL
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= known, (rule["alert"], metric_names(rule["expr"]) - known)
    for expr in dashboard_exprs():
        assert metric_names(expr) <= known, (expr, metric_names(expr) - known)


def test_dashboard_covers_every_metric() -> None:
    used = {re.sub(r"_(bucket|sum|count|total)$", "", n) for e in dashboard_exprs() for n in metric_names(e)}
    missing = {f for f in our_families() if f.removesuffix("_total") not in used and f not in used}
    assert not missing, f"metrics without a dashboard panel: {sorted(missing)}"


def test_dashboard_is_a_grafana_dashboard() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 30
    ds = yaml.safe_load((MON / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert {"h", "w", "x", "y"} <= g.keys() and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["type"] in {"timeseries", "stat", "bargauge", "gauge", "table", "heatmap"}
        assert p["datasource"]["uid"] == ds["uid"] and p["datasource"]["type"] == ds["type"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
    prov = yaml.safe_load((MON / "grafana/provisioning/dashboards/threshold-vote.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


# --- a real Prometheus reads our /metrics --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_prometheus_scrapes_and_evaluates_everything(tmp_path: Path) -> None:
    """Feed the scenario's log into metrics, let Prometheus scrape them, run every dashboard query and rule."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus missing: apt-get install -y prometheus")
    mt = om.Metrics(CollectorRegistry())
    events, _ = scenario()
    pm.EventMetrics(mt).observe(recorded(events))
    with om.etcd_timer("claim", mt):
        pass
    om.register_gossip("node-1", lambda: {"published": 3, "delivered": 2}, mt)
    exporter = om.serve_metrics(0, registry=mt.registry)
    port = _free_port()
    (tmp_path / "alerts.yml").write_text((MON / "alerts.yml").read_text())
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "projector", "static_configs": [
            {"targets": [f"127.0.0.1:{exporter.server_address[1]}"]}]}],
    }))
    proc = subprocess.Popen(
        [exe, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/api/v1"

    def query(q: str) -> list[dict[str, Any]]:
        res = _get(f"{base}/query?" + urllib.parse.urlencode({"query": q}))
        assert res["status"] == "success", (q, res)
        return res["data"]["result"]

    try:
        deadline = time.monotonic() + 25
        while True:
            try:
                if query('up{job="projector"} == 1') and query("ALERTS"):
                    break
            except (OSError, AssertionError):
                pass
            assert time.monotonic() < deadline, "Prometheus did not scrape or evaluate in time"
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.5)
        for name in om.SEED_METRICS:
            assert query(f'{{__name__=~"{name}(_bucket)?"}}'), f"{name}: no series scraped"
        for expr in dashboard_exprs():
            query(expr.replace("$__rate_interval", "10s").replace("$__range", "1m"))
        assert query("quorum_possible")[0]["value"][1] == "0"
        pending = query('ALERTS{alertname="QuorumImpossible"}')
        assert pending and pending[0]["metric"]["alertstate"] == "pending"  # `for: 1m` then fires
        rules = _get(f"{base}/rules")["data"]["groups"][0]["rules"]
        assert {r["name"] for r in rules} == set(SEED_ALERTS)
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        exporter.shutdown()
        exporter.server_close()
