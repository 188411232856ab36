"""The test-network suite needs root and Linux network namespaces; everything else it needs is checked loudly.

Missing ``ip``/``tc`` (iproute2) or ``iptables`` fails the tests with the package to install (./dev bootstrap
installs them); only a machine that cannot make a network namespace at all skips.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest


def _netns_impossible() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    ip = shutil.which("ip") or "/usr/sbin/ip"
    if not os.path.exists(ip):
        return None  # let the tests fail with the package name
    # Named like a run's namespace: should this process die right here, cleanup_stale removes it (no state file).
    probe = f"tvnet-{secrets.token_hex(3)}-probe"
    made = subprocess.run([ip, "netns", "add", probe], capture_output=True, text=True)
    subprocess.run([ip, "netns", "del", probe], capture_output=True)
    return None if made.returncode == 0 else f"cannot create a network namespace: {made.stderr.strip()}"


@pytest.fixture(scope="session", autouse=True)
def _needs_netns():
    why = _netns_impossible()
    if why:
        pytest.skip(f"test networks: {why}")
