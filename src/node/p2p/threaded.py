"""The Trio boundary: a gossip host on its own thread, driven from synchronous code.

Decision: py-libp2p 0.8.1 is Trio-native, while the node's database (Postgres) and etcd
clients are synchronous. Rather than mixing event loops (trio-asyncio) or wrapping every
DB call in ``trio.to_thread``, the whole libp2p stack runs in ``trio.run`` on one dedicated
thread, and the rest of the node talks to it through two thread-safe queues:

* outbound: ``publish(payload)`` puts into the host's bounded ``queue.Queue``; by default
  it blocks the *caller* when the queue is full (back-pressure, never a silent drop), and
  never blocks the Trio loop. A Trio task drains the queue at a paced rate.
* inbound: every accepted message becomes a ``Delivery(author, payload)`` in
  ``deliveries`` (a bounded ``queue.Queue``), consumed by the node's sync worker thread
  (decide, etcd CAS, append). If the consumer falls so far behind that the queue is full,
  the message is counted in ``counters.delivery_drops`` (the node then catches up from the
  cluster log, R13) - the Trio loop is never blocked by a slow database.

The validator hook is the one exception: it runs on the Trio thread (it must decide
before forwarding), so it has to be cheap and must not do I/O. Control calls (``ban``,
``unban``, ``set_allowed``, status) are marshalled onto the Trio thread with
``trio.from_thread``; once that thread is gone they raise ``GossipHostStopped`` (with the
exception that killed the thread as its cause), never ``trio.RunFinishedError``.

Health for the node's readiness probe, cheap and lock-free from any thread: ``alive``
(the Trio thread runs and the host serves), ``error`` (what killed it; also logged),
``connected_peer_ids`` / ``connected_member_count`` (a snapshot the Trio thread keeps).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import NamedTuple, TypeVar

import trio

from .config import GossipConfig
from .host import GossipCounters, GossipHost, Validator

T = TypeVar("T")
log = logging.getLogger(__name__)


class Delivery(NamedTuple):
    """A gossip payload accepted by the validator, with its envelope author's peer id."""

    author: str
    payload: bytes


class GossipStartError(RuntimeError):
    """The host thread failed to come up (bad key, port in use, ...)."""


class GossipHostStopped(RuntimeError):
    """A control call reached a host whose Trio thread is not running (not started yet,
    closed, or died: then ``__cause__`` is the exception that killed it)."""


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups, else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class ThreadedGossipHost:
    """Synchronous facade over ``GossipHost`` running ``trio.run`` on a daemon thread."""

    def __init__(self, config: GossipConfig, validate: Validator | None = None,
                 on_deliver: Callable[[str, bytes], None] | None = None) -> None:
        """``on_deliver(author, payload)``, if given, is called on the Trio thread for every accepted
        message instead of queueing it for ``get`` (it must not block: hand the payload on with a
        non-blocking put). It saves the consumer a thread hop per message; an exception it raises
        is logged and counted in ``delivery_drops``."""
        self.deliveries: queue.Queue[Delivery] = queue.Queue(maxsize=config.delivery_queue_size)
        self.gossip = GossipHost(config, validate=validate, on_deliver=on_deliver or self._enqueue_delivery)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    # -- identity / status (safe from any thread) --------------------------------------

    @property
    def peer_id(self) -> str:
        return self.gossip.peer_id

    @property
    def listen_addrs(self) -> list[str]:
        return list(self.gossip.listen_addrs)

    @property
    def bound_addrs(self) -> list[str]:
        return list(self.gossip.bound_addrs)

    @property
    def counters(self) -> GossipCounters:
        return self.gossip.counters

    # -- health (safe and cheap from any thread: no marshalling, no lock) ------------------

    @property
    def alive(self) -> bool:
        """True while the Trio thread runs and the host serves (started, not closing, not dead)."""
        t = self._thread
        return t is not None and t.is_alive() and self._error is None and self.gossip.serving

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the Trio thread (None while alive or after a clean close)."""
        return self._error

    @property
    def connected_peer_ids(self) -> frozenset[str]:
        """Peer ids with an open connection (snapshot kept by the Trio thread; empty once dead)."""
        return self.gossip.connected_peer_ids if self.alive else frozenset()

    @property
    def connected_member_count(self) -> int:
        """Connected peers on the member allowlist (all connected peers when none is set)."""
        return self.gossip.connected_member_count if self.alive else 0

    @property
    def allowed(self) -> frozenset[str] | None:
        """The member allowlist in force (None = no allowlist)."""
        return self.gossip.allowed

    def inbound_slots(self) -> tuple[int, int]:
        """(in use, total) inbound-connection slots of the swarm (marshalled)."""
        return self._call(self.gossip.inbound_slots)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> ThreadedGossipHost:
        """Start the Trio thread; return once listening and subscribed (or raise)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name=f"gossip-{self.peer_id[-6:]}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise GossipStartError("gossip host did not start in time")
        if self._error is not None:
            raise GossipStartError(f"gossip host failed to start: {self._error!r}") from self._error
        return self

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._error = _leaf(exc)
            log.error("gossip host %s: Trio thread died: %r", self.peer_id, self._error, exc_info=self._error)
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.gossip.serve)
            self._started.set()

    def close(self, timeout: float = 30.0) -> None:
        """Graceful stop (intake, drain, unsubscribe, close) and join the thread."""
        if self._thread is None or not self._thread.is_alive() or self._token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run(self.gossip.close, trio_token=self._token)
        self._thread.join(timeout)

    def __enter__(self) -> ThreadedGossipHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- data path ------------------------------------------------------------------------

    def publish(self, payload: bytes, block: bool = True, timeout: float | None = None,
                to: Iterable[str] | None = None) -> bool:
        """Queue a payload for gossip. Blocks while the send queue is full (unless
        ``block=False``); returns False (and counts it) if refused. ``to``: meant for these
        peers only (``GossipHost.publish_threadsafe``)."""
        return self.gossip.publish_threadsafe(payload, block=block, timeout=timeout, to=to)

    def _enqueue_delivery(self, author: str, payload: bytes) -> None:
        # Runs on the Trio thread: never block it.
        try:
            self.deliveries.put_nowait(Delivery(author, payload))
        except queue.Full:
            self.gossip.counters.delivery_drops += 1

    def get(self, timeout: float | None = None) -> Delivery:
        """Next delivered message (raises ``queue.Empty`` on timeout)."""
        return self.deliveries.get(timeout=timeout)

    # -- control (marshalled onto the Trio thread) ------------------------------------------

    def _check_running(self) -> trio.lowlevel.TrioToken:
        if self._error is not None:
            raise GossipHostStopped(f"gossip host died: {self._error!r}") from self._error
        if self._token is None or self._thread is None or not self._thread.is_alive():
            raise GossipHostStopped("gossip host is not running (not started, or closed)")
        return self._token

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        token = self._check_running()
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=token)
        except trio.RunFinishedError:
            if self._thread is not None:
                self._thread.join(1.0)  # let _run record why the loop ended
            self._check_running()  # raises with the cause if the thread died meanwhile
            raise GossipHostStopped("gossip host stopped during the call") from None

    def ban(self, peer_id: str) -> None:
        """R10 ban: blacklist, close connections, drop from the DHT, refuse reconnects."""
        self._call(self.gossip.ban, peer_id)

    def unban(self, peer_id: str) -> None:
        """Lift a ban: addresses restored, the peer redialled, gossip flows again."""
        self._call(self.gossip.unban, peer_id)

    def set_allowed(self, peer_ids: Iterable[str] | None, extra_peers: Iterable[str] | None = None) -> None:
        """Replace the member allowlist (None removes it); see ``GossipHost.set_allowed``.

        Thread-safe (runs on the Trio thread). Before ``start`` it just sets the initial
        allowlist. ``extra_peers=None`` keeps the configured extras.
        """
        members = None if peer_ids is None else list(peer_ids)
        extra = None if extra_peers is None else list(extra_peers)
        if self._thread is None:
            self.gossip.set_allowed(members, extra)
            return
        self._call(self.gossip.set_allowed, members, extra)

    def connected_peers(self) -> list[str]:
        return self._call(self.gossip.connected_peers)

    def mesh_peers(self) -> list[str]:
        return self._call(self.gossip.mesh_peers)

    def connect(self, maddr: str) -> bool:
        """Dial a peer by full multiaddr (blocks until connected or failed)."""
        token = self._check_running()
        try:
            return trio.from_thread.run(self.gossip.connect, maddr, trio_token=token)
        except trio.RunFinishedError:
            if self._thread is not None:
                self._thread.join(1.0)
            self._check_running()
            raise GossipHostStopped("gossip host stopped during the call") from None
