"""Real servers for the tests: one Postgres and one etcd per test run, started here.

Each test gets a fresh database cloned from a migrated template (CREATE DATABASE ... TEMPLATE
is a file copy: fast) and its own etcd key prefix, so tests never see each other's state.
"""

from __future__ import annotations

import itertools
import os
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from devstack.etcd import Etcd
from devstack.postgres import Postgres
from tvote import db

TEMPLATE = "tvote_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    # fsync off: these tests check behaviour, not durability; the benchmarks run with fsync on.
    with Postgres(fsync=os.environ.get("TVOTE_TEST_FSYNC") == "1") as pg:
        pg.create_database(TEMPLATE)
        db.upgrade(pg.url(TEMPLATE))
        yield pg


@pytest.fixture(scope="session")
def etcd_server():
    with Etcd(size=1, unsafe_tmpfs=True) as e:
        yield e


@dataclass
class Database:
    server: Postgres
    name: str

    @property
    def owner_dsn(self) -> str:
        return self.server.dsn(self.name)

    @property
    def app_dsn(self) -> str:
        return self.server.dsn(self.name, user=db.APP_ROLE)

    @property
    def owner_url(self) -> str:
        return self.server.url(self.name)


@pytest.fixture
def database(pg_server) -> Database:
    name = f"t{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
    yield Database(pg_server, name)
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def etcd_prefix() -> str:
    return f"/t/{uuid.uuid4().hex[:8]}"
