"""The service fixtures live in tests/services.py and are registered for every suite by tests/conftest.py.

Re-exported here for suites that import them by this name.
"""

from services import Database, database, etcd_prefix, etcd_server, pg_server  # noqa: F401
