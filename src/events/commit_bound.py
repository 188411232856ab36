"""A bound on one Postgres write: past it, the server is asked to cancel, then the socket is cut.

Why: with ``synchronous_mode_strict`` a commit waits for a synchronous standby, and with every
standby down it waits for ever; the writer's worker hangs with it. Postgres 15 offers no server-side
bound on that wait: ``statement_timeout`` is disarmed before the commit runs (``finish_xact_command``),
so a commit under a 1 s ``statement_timeout`` still waited until it was cancelled (measured:
tests/ha/test_commit_bound.py and docs/decisions.md). A cancel request does end the wait, but
the COMMIT then *succeeds* with a WARNING ("canceling wait for synchronous replication ... The
transaction has already committed locally, but might not have been replicated to the standby"):
the caller must treat such a commit as in doubt, never as durable. :meth:`CommitBound.disarm` says
whether the bound fired, and :func:`syncrep_cancelled` spots the WARNING when someone else (an
operator's ``pg_cancel_backend``) cancelled it.

A cancel needs a live server: a primary whose process is stopped (SIGSTOP, a hung host) answers
neither it nor the query, and TCP keepalives do not notice (its kernel still answers them). So
``grace_s`` after the cancel the socket is shut down under the waiting call, which then fails at once
as a dropped connection does.

One watcher thread per bound (per store), armed and disarmed around each write: no thread per call;
it ends after ``IDLE_EXIT_S`` without a write (stores that tools and checks make and drop). Arming and
disarming do not wake it while it sleeps until an earlier moment than the new deadline: it wakes then,
finds the write done (or a later one armed) and sleeps again. A loaded node reads the log ~50 times a
second; waking the watcher twice a read cost ~1.3 % of its CPU in thread switches (issue 15's profile).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import psycopg

IDLE_EXIT_S = 30.0
SYNCREP_CANCELLED = "wait for synchronous replication"  # in both of Postgres's WARNINGs (syncrep.c): cancel, terminate


def syncrep_cancelled(diag: psycopg.errors.Diagnostic) -> bool:
    """A notice saying a commit's wait for the synchronous standby was cancelled (it committed only locally)."""
    return (diag.severity_nonlocalized or diag.severity or "") == "WARNING" and \
        SYNCREP_CANCELLED in (diag.message_primary or "")


class CommitBound:
    """Cancel, then cut, a write on ``conn`` still running ``bound_s`` after :meth:`arm`."""

    def __init__(self, bound_s: float, grace_s: float = 1.0) -> None:
        if bound_s <= 0 or grace_s <= 0:
            raise ValueError(f"bound {bound_s} s and grace {grace_s} s must be positive")
        self.bound_s, self.grace_s = bound_s, grace_s
        self._cv = threading.Condition()
        self._conn: psycopg.Connection | None = None
        self._deadline = 0.0
        self._arm = 0  # which arming the watcher acts on
        self._fired = 0  # the last arming the bound fired for
        self._thread: threading.Thread | None = None
        self._wake_at = 0.0  # when the sleeping watcher wakes by itself (inf: only when notified; 0: awake)
        self.wakeups = 0  # the watcher's wake-ups (its cost: a thread switch each)

    def arm(self, conn: psycopg.Connection) -> int:
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="pg-commit-bound", daemon=True)
                self._thread.start()
            self._arm += 1
            self._conn, self._deadline = conn, time.monotonic() + self.bound_s
            if self._wake_at > self._deadline:  # it would sleep past this deadline
                self._cv.notify()
            return self._arm

    def disarm(self, token: int) -> bool:
        """Stop watching; True when the bound fired for this arming (the write was cancelled or cut)."""
        with self._cv:
            if self._arm == token:
                self._conn = None  # the watcher finds it so when it wakes: nothing to do until then
            return self._fired == token

    def _sleep(self, timeout: float, wake_at: float) -> bool:
        self._wake_at = wake_at
        try:
            return self._cv.wait(timeout)
        finally:
            self._wake_at = 0.0
            self.wakeups += 1

    def _watch(self) -> None:
        with self._cv:
            while True:
                if self._conn is None:
                    armed = self._arm
                    if not self._sleep(IDLE_EXIT_S, float("inf")) and self._conn is None and self._arm == armed:
                        self._thread = None  # idle (a closed store, a tool's): the next arm starts another
                        return
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._sleep(left, self._deadline)
                    continue
                conn, token = self._conn, self._arm
                self._fired = token
                self._cv.release()
                try:
                    with contextlib.suppress(Exception):  # a server that does not answer: the cut follows
                        conn.cancel_safe(timeout=self.grace_s)
                finally:
                    self._cv.acquire()
                end = time.monotonic() + self.grace_s
                while self._arm == token and self._conn is not None and (left := end - time.monotonic()) > 0:
                    self._cv.wait(left)
                if self._arm == token and self._conn is not None:
                    cut(conn)
                    self._conn = None


def cut(conn: psycopg.Connection) -> None:
    """Shut the connection's socket down under whoever waits on it: its next read sees the end at once."""
    with contextlib.suppress(OSError, psycopg.Error):
        s = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            s.shutdown(socket.SHUT_RDWR)
        finally:
            s.close()
