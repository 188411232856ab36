"""tla/run_tlc.py loaded as a module, for the TLC tests and the conformance test (one loader)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TLA_DIR = Path(__file__).resolve().parents[2] / "tla"


def _load_runner():
    spec = importlib.util.spec_from_file_location("run_tlc", TLA_DIR / "run_tlc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_tlc"] = module
    spec.loader.exec_module(module)
    return module


run_tlc = _load_runner()
