"""Replay: rebuild every projection from the log into fresh tables and compare digests (R12).

The live projector is paused (we hold its advisory lock) while both sides are brought to the
same log position, so the comparison is exact. Needs a role that may create schemas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from projections.digest import TABLES, digest, table_digests
from projections.projector import Projector


@dataclass
class ReplayReport:
    position: int
    events: int
    seconds: float
    live_digest: str
    replay_digest: str
    differing_tables: list[str]

    @property
    def equal(self) -> bool:
        return self.live_digest == self.replay_digest

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def replay(dsn: str, keep: bool = False, batch: int = 5000) -> ReplayReport:
    live = Projector(dsn)
    live.pause_others()  # live projectors wait until we close: both sides end at one position
    schema = f"replay_{int(time.time() * 1000)}"
    try:
        position = _last_position(dsn)
        live.catch_up(until=position)
        _create_scratch(dsn, schema)
        fresh = Projector(dsn, schema=schema)
        try:
            t0 = time.perf_counter()
            n = fresh.catch_up(until=position, batch=batch)
            seconds = time.perf_counter() - t0
        finally:
            fresh.close()
        with psycopg.connect(dsn) as c:
            live_tables, replay_tables = table_digests(c), table_digests(c, schema)
            report = ReplayReport(position, n, seconds, digest(c), digest(c, schema),
                                  [t for t in TABLES if live_tables[t] != replay_tables[t]])
        return report
    finally:
        live.close()
        if not keep:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def replay_digest_upto(dsn: str, position: int, batch: int = 5000) -> str:
    """The digest of projections rebuilt from the log up to ``position`` only, in a scratch schema (dropped).

    What a copy of this log restored to ``position`` must replay to (the pgBackRest restore drill);
    the live projections are not touched, and may stand anywhere.
    """
    schema = f"replay_upto_{position}_{int(time.time() * 1000)}"
    try:
        _create_scratch(dsn, schema)
        fresh = Projector(dsn, schema=schema)
        try:
            fresh.catch_up(until=position, batch=batch)
        finally:
            fresh.close()
        with psycopg.connect(dsn) as c:
            return digest(c, schema)
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _create_scratch(dsn: str, schema: str) -> None:
    """Empty copies of the projection tables in ``schema``, for a rebuild beside the live ones."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{schema}"')
        for table in [*TABLES, "projector_tracking"]:
            c.execute(f'CREATE TABLE "{schema}".{table} (LIKE public.{table} INCLUDING ALL)')


def _last_position(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
