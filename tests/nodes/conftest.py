"""Real trustee node processes over real libp2p, with a real Postgres and etcd (session servers)."""

from __future__ import annotations

pytest_plugins = ["integration.conftest"]
