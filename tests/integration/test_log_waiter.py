"""events.log_waiter against a real Postgres: an append wakes a follower; a quiet log lets it sleep.

Followers (the submitter, the projector) sleep on it when idle instead of reading the log every few
milliseconds. It must wake on every committed append (migration 0007's trigger), coalesce a storm of
notifications into one read, and outlive a Postgres restart by polling until it can listen again.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from helpers import Writers, admin, trustees

from devstack.postgres import Postgres
from events.log_waiter import CHANNEL, LogWaiter
from events.postgres_store import PostgresStore
from tvote import db

pytestmark = pytest.mark.integration


def test_an_append_wakes_the_waiter_and_a_quiet_log_lets_it_sleep(database):
    ts = trustees(3)
    w = Writers(PostgresStore(database.app_dsn), voter=ts[0])
    waiter = LogWaiter(database.app_dsn)
    try:
        assert waiter.wait(5) is True  # a fresh LISTEN: read once (appends before it were not notified)
        t0 = time.monotonic()
        assert waiter.wait(0.3) is False and time.monotonic() - t0 >= 0.25  # nothing appended: it slept
        timer = threading.Timer(0.2, lambda: w.execute(admin(ts, 2)[1:]))
        timer.start()
        t0 = time.monotonic()
        assert waiter.wait(10) is True
        woke = time.monotonic() - t0
        timer.join()
        assert woke < 5, f"woke after {woke:.2f}s"
        assert waiter.wakeups == 1
    finally:
        waiter.close()
        w.close()


def test_a_storm_of_notifications_is_one_wakeup(database):
    """Anyone with the app role can NOTIFY; a storm costs the follower one read, not one per message."""
    waiter = LogWaiter(database.app_dsn)
    try:
        assert waiter.wait(5) is True
        with psycopg.connect(database.app_dsn, autocommit=True) as c:
            for _ in range(200):
                c.execute(f"NOTIFY {CHANNEL}, 'x'")
        time.sleep(0.3)
        assert waiter.wait(5) is True
        assert waiter.wait(0.3) is False  # drained: the 199 others were taken with the first
        assert waiter.wakeups == 1
    finally:
        waiter.close()


def test_a_flood_of_notifications_wakes_no_more_often_than_the_poll_it_replaced(database):
    """A session sending NOTIFY without pause: wakeups stay min_gap apart (the 5 ms poll's read rate at most)."""
    waiter = LogWaiter(database.app_dsn, min_gap=0.05)
    stop = threading.Event()

    def flood() -> None:
        with psycopg.connect(database.app_dsn, autocommit=True) as c:
            while not stop.is_set():
                c.execute(f"NOTIFY {CHANNEL}, 'x'")

    sender = threading.Thread(target=flood)
    try:
        assert waiter.wait(5) is True
        sender.start()
        t0 = time.monotonic()
        woke = sum(waiter.wait(1) for _ in range(10))
        elapsed = time.monotonic() - t0
        assert woke == 10 and elapsed >= 10 * 0.05 * 0.9, f"{woke} wakeups in {elapsed:.3f}s"
    finally:
        stop.set()
        if sender.is_alive():
            sender.join()
        waiter.close()


def test_the_waiter_polls_through_a_postgres_restart_and_listens_again():
    pg = Postgres(fsync=False).start()  # a private server: this test restarts it
    waiter = None
    try:
        pg.create_database("tv")
        db.upgrade(pg.url("tv"))
        dsn = pg.dsn("tv", user=db.APP_ROLE)
        waiter = LogWaiter(dsn, connect_timeout=2, retry_after=0.5)
        assert waiter.wait(5) is True
        pg.stop("immediate")
        t0 = time.monotonic()
        assert waiter.wait(0.5) is True  # the connection is gone: "maybe", so the caller reads
        assert waiter.wait(0.5) is True and time.monotonic() - t0 < 5  # no server: it sleeps as a poll would
        pg.start()
        end = time.monotonic() + 20
        while waiter.wait(0.2) is True:  # polls until it listens again, then reads once after LISTEN
            assert time.monotonic() < end, "never listened again"
        ts = trustees(3)
        w = Writers(PostgresStore(dsn), voter=ts[0])
        try:
            threading.Timer(0.2, lambda: w.execute(admin(ts, 2)[1:])).start()
            assert waiter.wait(10) is True
        finally:
            time.sleep(0.5)
            w.close()
    finally:
        if waiter is not None:
            waiter.close()
        pg.destroy()
