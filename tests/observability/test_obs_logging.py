"""JSON logs carry tx_id, node_id and peer_id from context, for structlog and stdlib loggers alike."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from observability import tracing
from observability.logging import configure_logging, get_logger, log_context


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buf = io.StringIO()
    configure_logging("DEBUG", stream=buf, service="tvote-node")
    yield buf
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers, root.level = saved[0], saved[1]


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_context_fields_reach_every_line(out: io.StringIO) -> None:
    log = get_logger("node")
    with log_context(node_id="node-1", peer_id="12D3KooW"):
        with log_context(tx_id="tx_0001", ignored=None):
            log.info("vote recorded", value=7)
            logging.getLogger("psycopg").warning("slow query")
        log.info("idle")
    log.info("outside")
    a, b, c, d = lines(out)
    assert a["event"] == "vote recorded" and a["value"] == 7 and a["level"] == "info"
    assert (a["tx_id"], a["node_id"], a["peer_id"]) == ("tx_0001", "node-1", "12D3KooW")
    assert "ignored" not in a and a["service"] == "tvote-node" and a["timestamp"].endswith("Z")
    assert b["event"] == "slow query" and b["tx_id"] == "tx_0001" and b["logger"] == "psycopg"
    assert "tx_id" not in c and c["node_id"] == "node-1"
    assert "node_id" not in d


def test_lines_carry_trace_ids_when_tracing(out: io.StringIO) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracing.configure("t", exporter=InMemorySpanExporter())
    try:
        with tracing.span(tracing.THRESHOLD_CHECK):
            get_logger().info("checked")
            ids = tracing.current_ids()
    finally:
        tracing.shutdown()
    (line,) = lines(out)
    assert ids is not None and (line["trace_id"], line["span_id"]) == ids


def test_level_filters(out: io.StringIO) -> None:
    configure_logging("WARNING", stream=out)
    get_logger().info("hidden")
    get_logger().warning("shown")
    assert [x["event"] for x in lines(out)] == ["shown"]
