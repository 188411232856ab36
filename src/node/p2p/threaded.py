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
``unban``, status) are marshalled onto the Trio thread with ``trio.from_thread``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import trio

from .config import GossipConfig
from .host import GossipCounters, GossipHost, Validator

T = TypeVar("T")


class Delivery(NamedTuple):
    """A gossip payload accepted by the validator, with its envelope author's peer id."""

    author: str
    payload: bytes


class GossipStartError(RuntimeError):
    """The host thread failed to come up (bad key, port in use, ...)."""


class ThreadedGossipHost:
    """Synchronous facade over ``GossipHost`` running ``trio.run`` on a daemon thread."""

    def __init__(self, config: GossipConfig, validate: Validator | None = None) -> None:
        self.deliveries: queue.Queue[Delivery] = queue.Queue(maxsize=config.delivery_queue_size)
        self.gossip = GossipHost(config, validate=validate, on_deliver=self._enqueue_delivery)
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
    def counters(self) -> GossipCounters:
        return self.gossip.counters

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
            self._error = exc
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

    def publish(self, payload: bytes, block: bool = True, timeout: float | None = None) -> bool:
        """Queue a payload for gossip. Blocks while the send queue is full (unless
        ``block=False``); returns False (and counts it) if refused."""
        return self.gossip.publish_threadsafe(payload, block=block, timeout=timeout)

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

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        if self._token is None:
            raise RuntimeError("not started")
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def ban(self, peer_id: str) -> None:
        """R10 ban: blacklist, close connections, drop from the DHT, refuse reconnects."""
        self._call(self.gossip.ban, peer_id)

    def unban(self, peer_id: str) -> None:
        self._call(self.gossip.unban, peer_id)

    def connected_peers(self) -> list[str]:
        return self._call(self.gossip.connected_peers)

    def mesh_peers(self) -> list[str]:
        return self._call(self.gossip.mesh_peers)

    def connect(self, maddr: str) -> bool:
        """Dial a peer by full multiaddr (blocks until connected or failed)."""
        if self._token is None:
            raise RuntimeError("not started")
        return trio.from_thread.run(self.gossip.connect, maddr, trio_token=self._token)
