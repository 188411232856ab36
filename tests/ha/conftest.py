"""One Patroni cluster (three Postgres 15 members) per module, on the session's etcd, its own key scope.

fsync off, as in the other suites: these tests kill processes (kill -9), which loses nothing the kernel
holds; fsync guards against a power loss, which no test here makes. It makes the cluster start in
seconds (initdb and base backups without a sync) on a loaded CI machine.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from devstack.patroni import SCOPE, PatroniCluster
from tvote import db

TEMPLATE = "tvote_template"
_dbs = itertools.count()


@pytest.fixture(scope="module")
def patroni(etcd_server):
    with PatroniCluster(etcd_server.endpoints, size=3, fsync=False, scope=f"{SCOPE}-{uuid.uuid4().hex[:6]}",
                        service_prefixes=("/tvote", "/t/")) as pc:
        pc.create_database(TEMPLATE)
        db.upgrade(pc.url(TEMPLATE))
        yield pc


@dataclass
class HaDatabase:
    cluster: PatroniCluster
    name: str

    @property
    def app_dsn(self) -> str:
        return self.cluster.dsn(self.name, user=db.APP_ROLE)

    @property
    def owner_dsn(self) -> str:
        return self.cluster.dsn(self.name)


@pytest.fixture
def ha_database(patroni) -> HaDatabase:
    patroni.heal()  # a member an earlier test killed is back and streaming
    name = f"ha{next(_dbs)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(patroni.dsn("postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
    return HaDatabase(patroni, name)
