"""The database itself keeps the log append-only, and migrations go up from empty and back down."""

from __future__ import annotations

import psycopg
import pytest
from helpers import W
from psycopg import errors as pgerr

from events.model import CLUSTER_STREAM
from events.postgres_store import PostgresStore
from events.store import NewEvent, Unit
from tvote import db


def _one_event(store: PostgresStore) -> None:
    e = NewEvent(CLUSTER_STREAM, "ClusterConfigured", 1, {"threshold": 1, "deadline_ms": 1, "reputation_floor": 0,
                 "silent_penalty": 0, "operator": "op", "seq": 0}, "config:0")
    store.append([Unit({CLUSTER_STREAM: 0}, (e,))], W)


@pytest.mark.parametrize("sql", ["UPDATE events SET writer = 'x'", "DELETE FROM events", "TRUNCATE events"])
def test_service_role_cannot_change_the_log(database, sql):
    _one_event(PostgresStore(database.app_dsn))
    with psycopg.connect(database.app_dsn) as c, pytest.raises(pgerr.InsufficientPrivilege):
        c.execute(sql)


@pytest.mark.parametrize("sql", ["UPDATE events SET writer = 'x'", "DELETE FROM events", "TRUNCATE events"])
def test_even_the_owner_is_refused_by_the_trigger(database, sql):
    _one_event(PostgresStore(database.owner_dsn))
    with psycopg.connect(database.owner_dsn) as c, pytest.raises(pgerr.InsufficientPrivilege) as ei:
        c.execute(sql)
    assert "append-only" in str(ei.value)


def test_migrations_upgrade_from_empty_and_downgrade(pg_server):
    name = "migrate_roundtrip"
    pg_server.create_database(name)
    url = pg_server.url(name)
    db.upgrade(url)
    with psycopg.connect(pg_server.dsn(name)) as c:
        tables = {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"events", "tx_state", "vote_history", "byzantine_violations", "node_reputation",
            "blockchain_submissions", "projector_tracking"} <= tables
    db.downgrade(url, "0001")
    db.downgrade(url, "base")
    with psycopg.connect(pg_server.dsn(name)) as c:
        left = {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert left == {"alembic_version"}
    db.upgrade(url)  # and up again from empty
