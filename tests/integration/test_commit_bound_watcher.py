"""The write bound's watcher is woken only when it must be, and still fires on time (issue 15, issue 17).

A loaded node arms and disarms the bound around ~50 log reads a second; waking the watcher thread at
each cost ~1.3 % of the node's CPU. These tests hold the lazy watcher to the old one's behaviour: a
statement still running past the bound is cancelled within the bound (plus scheduling), after any
number of quick ones, and after the watcher has exited idle.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from events import commit_bound
from events.commit_bound import CommitBound

pytestmark = pytest.mark.integration
BOUND = 1.0


def _slow_statement_is_cancelled(bound: CommitBound, conn: psycopg.Connection) -> float:
    t0 = time.monotonic()
    token = bound.arm(conn)
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("SELECT pg_sleep(10)")
    took = time.monotonic() - t0
    assert bound.disarm(token)
    return took


def test_quick_statements_do_not_wake_the_watcher_and_a_slow_one_is_still_cancelled_at_the_bound(pg_server):
    bound = CommitBound(BOUND, grace_s=1.0)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        for _ in range(300):
            token = bound.arm(conn)
            conn.execute("SELECT 1")
            assert not bound.disarm(token)
        assert bound.wakeups < 20, bound.wakeups  # was 2 per statement: 600
        took = _slow_statement_is_cancelled(bound, conn)
    assert BOUND <= took < BOUND + 1.5, took


def test_after_the_watcher_exits_idle_the_next_arm_starts_another_that_fires(pg_server, monkeypatch):
    monkeypatch.setattr(commit_bound, "IDLE_EXIT_S", 0.3)
    bound = CommitBound(BOUND, grace_s=1.0)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        token = bound.arm(conn)
        conn.execute("SELECT 1")
        bound.disarm(token)
        first = bound._thread
        deadline = time.monotonic() + BOUND + 5
        while bound._thread is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bound._thread is None and not first.is_alive()  # idle: it ended
        took = _slow_statement_is_cancelled(bound, conn)
    assert BOUND <= took < BOUND + 1.5, took
