"""Wake a log follower when the log moves, instead of reading it on a short timer.

The submitter read the log every 5 ms and the projector every 50 ms when nothing happened: idle, the
submitter alone used 8 % of a core (issue 15's fixed per-process work; over months, pure waste). Each
statement that appends to ``events`` sends ``NOTIFY tvote_log`` (migration 0007), which Postgres
delivers at commit to every session that LISTENs, so a follower can sleep until the log moves.

A notification is a hint, never data: the follower still reads (and verifies) the rows after its
position, so a forged or repeated NOTIFY costs one read and no more (notifications arriving while it
reads are drained as one). A lost one (the listening connection dropped, a failover to another
Postgres member, a restart) costs at most the caller's timeout, the poll it falls back to: the
waiter reconnects on the next wait, and meanwhile :meth:`LogWaiter.wait` sleeps and says "maybe".
"""

from __future__ import annotations

import contextlib
import logging
import time

import psycopg

CHANNEL = "tvote_log"

log = logging.getLogger(__name__)


class LogWaiter:
    """One LISTEN connection; :meth:`wait` returns when the log may have moved, or at the timeout."""

    def __init__(self, dsn: str, connect_timeout: float = 5.0, retry_after: float = 5.0,
                 min_gap: float = 0.005) -> None:
        self.dsn = dsn
        self._timeout = connect_timeout
        self._retry_after = retry_after  # a failed connect is not tried again sooner (an outage is not a storm)
        # wakeups are at least this far apart: a NOTIFY flood (any app-role session can send one) costs no
        # more reads than the 5 ms poll this replaced
        self._min_gap = min_gap
        self._woke_at = float("-inf")
        self._conn: psycopg.Connection | None = None
        self._failed_at: float | None = None
        self.wakeups = 0  # notifications taken (a figure for tests and benches)

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s; True if a notification came (read the log), False at the timeout.

        With no listening connection (Postgres unreachable) it sleeps the whole timeout and returns
        True: the caller reads as it would on a timer, and finds out about the outage there.
        """
        if self._conn is None or self._conn.closed:
            if self._listen():
                return True  # appends made before LISTEN took effect were not notified: read once now
            time.sleep(timeout)
            return True
        conn = self._conn
        early = self._min_gap - (time.monotonic() - self._woke_at)
        if early > 0:
            time.sleep(min(early, timeout))
            timeout = max(0.0, timeout - early)
        try:
            got = any(True for _ in conn.notifies(timeout=timeout, stop_after=1))
            if got:
                self.wakeups += 1
                self._woke_at = time.monotonic()
                # drain what came meanwhile (one read covers them all), bounded so a flood cannot hold us here
                for _ in conn.notifies(timeout=0, stop_after=10_000):
                    pass
            return got
        except psycopg.Error as e:
            log.info("log waiter lost its connection (%s); polling until it is back", str(e).strip()[:120])
            self._drop()
            return True

    def _listen(self) -> bool:
        """Open the LISTEN connection (not sooner than ``retry_after`` after a failure); True if it is open."""
        if self._failed_at is not None and time.monotonic() - self._failed_at < self._retry_after:
            return False
        conn = None
        try:
            conn = psycopg.connect(self.dsn, connect_timeout=self._timeout, autocommit=True)
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as e:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            log.info("log waiter cannot listen (%s); polling meanwhile", str(e).strip()[:120])
            self._failed_at = time.monotonic()
            return False
        self._conn, self._failed_at = conn, None
        return True

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        self._failed_at = time.monotonic()

    def close(self) -> None:
        self._drop()
