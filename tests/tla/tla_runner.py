"""tla/run_tlc.py and tla/trace_check.py loaded as modules, for the TLC, conformance and trace-check tests
(one loader: tests/helpers.py's tla_tool)."""

from __future__ import annotations

from pathlib import Path

from helpers import tla_tool

TLA_DIR = Path(__file__).resolve().parents[2] / "tla"

run_tlc = tla_tool("run_tlc")
trace_check = tla_tool("trace_check")
