"""observability.allocator: the node, projector and submitter hold glibc's mmap threshold at start."""

from __future__ import annotations

import subprocess
import sys

from observability import allocator


def _in_child(code: str, env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_it_applies_on_glibc_and_leaves_an_operators_setting_alone(monkeypatch) -> None:
    import os

    base = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    code = "from observability.allocator import hold_mmap_threshold; print(hold_mmap_threshold())"
    assert _in_child(code, base) == "True"  # the CI image and the deploy image are glibc (python:3.11-slim)
    assert _in_child(code, {**base, "MALLOC_MMAP_THRESHOLD_": "131072"}) == "False"
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert allocator.hold_mmap_threshold() is False
