"""Shared by every suite: tests/ on the path (helpers, contracts), and the real-service fixtures.

The service fixtures are session-scoped and lazy: a suite that asks for none starts nothing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from services import database, etcd_prefix, etcd_server, pg_server  # noqa: F401
