"""The projector outlives a Postgres restart: it reconnects with backoff and goes on from its tracking position.

Once, the projector died on a Postgres restart (OperationalError in run_once) and stayed dead while
`tvote status` showed stale projections as if current. A private Postgres here: this test restarts it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from helpers import Writers, admin, trustees

from devstack.postgres import Postgres
from events.postgres_store import PostgresStore
from tvote import db

pytestmark = pytest.mark.integration
TVOTE = [sys.executable, "-c", "from tvote.cli import app; app()"]


def tracked(dsn: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as c:
            row = c.execute("SELECT position FROM projector_tracking").fetchone()
            return row[0] if row else 0
    except psycopg.OperationalError:
        return -1


def test_the_projector_survives_a_postgres_restart(tmp_path: Path):
    pg = Postgres(fsync=False).start()  # its own data directory, owned by the postgres user
    try:
        pg.create_database("tv")
        db.upgrade(pg.url("tv"))
        dsn = pg.dsn("tv", user=db.APP_ROLE)
        ts = trustees(3)
        w = Writers(PostgresStore(dsn), voter=ts[0])
        w.execute(admin(ts, 2)[1:])
        w.execute([x.receive("a", 1) for x in ts[:2]])
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        proc = subprocess.Popen([*TVOTE, "projector", "--dsn", dsn], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            end = time.monotonic() + 30
            while tracked(dsn) != w.store.last_position() and time.monotonic() < end:
                time.sleep(0.1)
            assert tracked(dsn) == w.store.last_position()
            pg.stop("immediate")  # a crash, no goodbye
            time.sleep(2)
            pg.start()
            w.store.close()
            w.execute([x.receive("b", 2) for x in ts[:2]])  # the log moves on after the restart
            end = time.monotonic() + 30
            while tracked(dsn) != w.store.last_position() and time.monotonic() < end:
                time.sleep(0.2)
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:] if proc.stdout else ""
            assert tracked(dsn) == w.store.last_position()
        finally:
            proc.terminate()
            proc.wait(15)
            w.close()
    finally:
        pg.destroy()
