"""Tracing: the seed's span names, free when off (no OpenTelemetry import), real OTLP export when on."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from observability import tracing

SRC = str(Path(__file__).resolve().parents[2] / "src")
SEED_SPANS = [
    "vote.receive", "vote.validate", "vote.store", "vote.count", "vote.aggregate",
    "byzantine.check", "threshold.check", "submission.lock", "submission.submit", "submission.persist",
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = SRC
    env.update(extra)
    return env


@pytest.fixture
def traced() -> Iterator[object]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    assert tracing.configure("tvote-test", exporter=exporter)
    yield exporter
    tracing.shutdown()


def test_the_seed_span_names() -> None:
    assert list(tracing.SPAN_NAMES) == SEED_SPANS


def test_off_path_never_imports_opentelemetry_and_is_cheap() -> None:
    code = textwrap.dedent("""
        import sys, time
        from observability import tracing
        with tracing.span(tracing.VOTE_RECEIVE, tx_id="tx1") as s:
            s.set_attribute("k", 1)
        assert tracing.inject() == {}
        with tracing.span(tracing.VOTE_STORE, carrier={"traceparent": "00-x"}):
            pass
        assert not tracing.enabled()
        assert tracing.current_ids() is None
        t0 = time.perf_counter()
        for _ in range(100_000):
            with tracing.span(tracing.VOTE_STORE, tx_id="tx1"):
                pass
        per_span = (time.perf_counter() - t0) / 100_000
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        print(per_span, loaded)
        assert not loaded, loaded
        assert per_span < 5e-6, per_span
    """)
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_spans_nest_and_carry_attributes(traced) -> None:
    with tracing.span(tracing.VOTE_RECEIVE, tx_id="tx1", node_id="node-1", skipped=None):
        with tracing.span(tracing.VOTE_VALIDATE) as s:
            s.set_attribute("valid", True)
            ids = tracing.current_ids()
        with tracing.span(tracing.VOTE_STORE):
            pass
    spans = {s.name: s for s in traced.get_finished_spans()}
    assert set(spans) == {"vote.receive", "vote.validate", "vote.store"}
    root = spans["vote.receive"]
    assert dict(root.attributes) == {"tx_id": "tx1", "node_id": "node-1"}
    assert spans["vote.validate"].parent.span_id == root.context.span_id
    assert spans["vote.store"].context.trace_id == root.context.trace_id
    assert spans["vote.validate"].attributes["valid"] is True
    assert root.resource.attributes["service.name"] == "tvote-test"
    assert ids is not None and ids[0] == f"{root.context.trace_id:032x}"


def test_context_crosses_processes_through_a_carrier(traced) -> None:
    assert tracing.inject() == {}  # no active span: nothing to carry
    with tracing.span(tracing.VOTE_RECEIVE, tx_id="tx1"):
        carrier = tracing.inject()
    assert carrier["traceparent"].startswith("00-")
    with tracing.span(tracing.SUBMISSION_LOCK, carrier=carrier, tx_id="tx1"):
        pass
    recv, lock = traced.get_finished_spans()
    assert lock.context.trace_id == recv.context.trace_id and lock.parent.span_id == recv.context.span_id


def test_exception_is_recorded_on_the_span(traced) -> None:
    with pytest.raises(ValueError), tracing.span(tracing.SUBMISSION_SUBMIT, tx_id="tx9"):
        raise ValueError("rpc refused")
    (s,) = traced.get_finished_spans()
    assert not s.status.is_ok
    assert any(e.name == "exception" for e in s.events)


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, self.headers.get("Content-Type", ""), len(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_endpoint_variable_exports_otlp_http() -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT alone turns tracing on; spans reach /v1/traces as OTLP protobuf."""
    _Collector.received = []
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = textwrap.dedent("""
            from observability import tracing
            with tracing.span(tracing.SUBMISSION_LOCK, tx_id="tx1"):
                with tracing.span(tracing.SUBMISSION_SUBMIT):
                    pass
            assert tracing.enabled()
            tracing.shutdown()  # flushes the batch processor
        """)
        env = _env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
                   OTEL_SERVICE_NAME="tvote-submitter")
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert _Collector.received, "no OTLP request arrived"
    path, ctype, size = _Collector.received[0]
    assert path == "/v1/traces" and ctype == "application/x-protobuf" and size > 0
