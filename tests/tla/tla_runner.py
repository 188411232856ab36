"""tla/run_tlc.py and tla/trace_check.py loaded as modules, for the TLC, conformance and trace-check tests
(one loader)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TLA_DIR = Path(__file__).resolve().parents[2] / "tla"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, TLA_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


run_tlc = _load("run_tlc")
trace_check = _load("trace_check")
