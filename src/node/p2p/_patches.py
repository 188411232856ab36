"""Patches for py-libp2p 0.8.1, each kept here with an upstream-ready description.

1. Memoise the per-RPC signed-peer-record work (a measured receive-path cost).
2. Release a swarm's inbound-connection slot when the connection closes (a leak that makes
   a host deaf after 250 inbound connections in its lifetime).
3. Blacklisting a connected peer must not crash the host (``safe_teardown``).

All refuse to install on another libp2p version (the code they wrap may have changed).

Patch 1: signed peer records
----------------------------

Every pubsub RPC in 0.8.1 carries the sender's signed peer record (an Envelope):

* on send, ``env_to_send_in_RPC(host)`` rebuilds the host's address list to compare it
  with the cached record: ~58 us per RPC sent;
* on receive, ``maybe_consume_signed_record`` unmarshals the envelope, verifies its
  Ed25519 signature and rewrites the peerstore entry: ~71 us per RPC received, and the
  router does it a second time for RPCs with control messages.

In a full mesh each receiver gets every gossip message N-1 times (once from the origin,
once from each relay), so this is paid several times per message although the record
bytes of a given peer never change. We wrap both functions *as seen by the pubsub and
gossipsub modules* (nothing else in libp2p is touched) with caches that give the same
answers:

* the envelope to send is reused for ``ENV_TTL`` seconds per host (addresses of a
  trustee host do not change while it runs);
* a record already verified and consumed for ``(host, peer, exact record bytes)`` is not
  verified again for ``CONSUMED_TTL`` seconds: identical bytes verify identically, and
  the peerstore already holds it. Entries expire so the peerstore's address TTL is still
  refreshed regularly. A different record (new seq, new addresses) misses the cache and
  takes the library's full path.

The patch is idempotent and process-wide (``install``).

Patch 2: inbound slots are held until the host stops (``release_inbound_slots``)
-------------------------------------------------------------------------------

What is wrong (libp2p 0.8.1, ``libp2p/network/swarm.py``): ``Swarm._handle_inbound_connection``
takes a slot of ``Swarm._inbound_limiter`` (a ``trio.CapacityLimiter`` of
``max_connections - min_connections`` = 300 - 50 = **250** tokens by default) for every
accepted socket and releases it in a ``finally`` once ``_do_handle_inbound_connection``
returns. After a *successful* upgrade that function keeps the listener's handler task alive
with ``await self.manager.wait_finished()`` (the "intentional barrier": trio's
``serve_listeners`` force-closes the socket when the handler returns), i.e. until the
**swarm** stops, not until the **connection** closes. Every inbound connection that
completed Noise + muxer therefore keeps its slot (and a task) for the host's lifetime,
even after it closed. After 250 such connections ``acquire_nowait`` fails for every new
inbound socket, which is closed unread: the host still dials out, but no peer can reach
it any more. Failed upgrades (port scans, bad handshakes, peers refused by a security
gate) go through the exception path and do release their slot; established connections
never do. Measured here: the 251st connect/disconnect cycle and every later inbound dial
(a fresh honest peer included) are refused.

The fix: keep the handler task (and its slot) exactly as long as the *connection* is open:
after ``upgrade_inbound_raw_conn`` returns the muxed connection, wait until that muxed
connection is closed (``event_closed`` of yamux/mplex, set by ``close()`` and by the
read-loop error path, which is also what the swarm's ``SwarmConn`` close hook follows) or
until the swarm finishes (the old barrier, kept for shutdown), whichever comes first; then
return, and the ``finally`` of ``_handle_inbound_connection`` releases the slot. The
limiter thus bounds what it was meant to bound (concurrent inbound connections and
handshakes), not the lifetime count. Everything before the barrier (IP connection gate,
``RawConnection`` wrapping, ``upgrade_inbound_raw_conn`` with its timeout, resource
manager and ``add_conn``) is called unchanged; already-multiplexed transports (QUIC,
WebTransport) are passed to the original method untouched (we do not use them; they have
the same barrier). The socket is closed by the muxer before the handler returns, so
trio's forced close at handler exit is a no-op, as before.

Installed per ``Swarm`` instance (the listener's handler looks the method up on the
instance at every accept), so a host built with ``GossipConfig.release_inbound_slots=False``
keeps the library's behaviour: the reproduction test uses that.

Why not configuration: ``ConnectionConfig(max_connections=..., min_connections=...)`` only
moves the cliff (the count of lifetime connections still grows without bound, with a
parked task each), and a resource manager or connection gate cannot release a limiter slot
held by another task. No hook of 0.8.1 runs when an inbound connection closes *and* can end
the listener's handler task, so the barrier itself has to change.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections import OrderedDict
from typing import Any

import libp2p
import libp2p.pubsub.gossipsub as _gossipsub_mod
import libp2p.pubsub.pubsub as _pubsub_mod
import trio
from libp2p.abc import IMuxedConn
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC as _orig_env_to_send
from libp2p.pubsub.utils import maybe_consume_signed_record as _orig_consume

log = logging.getLogger(__name__)

PATCHED_VERSION = "0.8.1"
ENV_TTL = 1.0
CONSUMED_TTL = 60.0
CONSUMED_MAX = 4096

_env_cache: weakref.WeakKeyDictionary[Any, tuple[float, bytes]] = weakref.WeakKeyDictionary()
_consumed: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[bytes, bytes], float]] = (
    weakref.WeakKeyDictionary()
)
_installed = False


def cached_env_to_send_in_rpc(host: Any) -> tuple[bytes, bool]:
    """``env_to_send_in_RPC`` with a per-host cache of ``ENV_TTL`` seconds."""
    now = time.monotonic()
    hit = _env_cache.get(host)
    if hit is not None and hit[0] > now:
        return hit[1], False
    env, created = _orig_env_to_send(host)
    _env_cache[host] = (now + ENV_TTL, env)
    return env, created


def cached_consume_signed_record(msg: Any, host: Any, peer_id: ID) -> bool:
    """``maybe_consume_signed_record`` that skips re-verifying identical record bytes."""
    if not msg.HasField("senderRecord"):
        return True
    record = msg.senderRecord
    per_host = _consumed.get(host)
    if per_host is None:
        per_host = OrderedDict()
        _consumed[host] = per_host
    key = (peer_id.to_bytes(), record)
    now = time.monotonic()
    expiry = per_host.get(key)
    if expiry is not None and expiry > now:
        return True
    ok = _orig_consume(msg, host, peer_id)
    if ok:
        per_host[key] = now + CONSUMED_TTL
        per_host.move_to_end(key)
        while len(per_host) > CONSUMED_MAX:
            per_host.popitem(last=False)
    return ok


async def _safe_teardown_if_connected(self: Any, peer_id: ID) -> None:
    """Patch 3: ``Pubsub._teardown_if_connected`` of 0.8.1, with ``pop`` where it had ``del``.

    What is wrong (libp2p/pubsub/pubsub.py, ``add_to_blacklist`` -> ``_teardown_if_connected``):
    it reads the peer's stream, awaits ``stream.reset()`` and then does ``del self.peers[peer_id]``.
    While it awaits, the connection's own close path (our ban disconnects the peer at once) can
    remove the entry first; the ``del`` then raises ``KeyError`` in the host's task group, which
    ends the Trio thread: banning a Byzantine peer stopped the honest node that banned it (seen
    under load with a js-libp2p forger, reproduced by widening the await).
    """
    stream = self.peers.get(peer_id)
    if stream is not None:
        with contextlib.suppress(Exception):
            await stream.reset()
        self.peers.pop(peer_id, None)
    self._forget_all_subscriptions(peer_id)


def install() -> bool:
    """Install the wrappers into libp2p.pubsub.{pubsub,gossipsub} (and patch 3). True if active."""
    global _installed
    if _installed:
        return True
    if getattr(libp2p, "__version__", None) != PATCHED_VERSION:
        return False
    _pubsub_mod.env_to_send_in_RPC = cached_env_to_send_in_rpc  # type: ignore[attr-defined]
    _gossipsub_mod.env_to_send_in_RPC = cached_env_to_send_in_rpc  # type: ignore[attr-defined]
    _pubsub_mod.maybe_consume_signed_record = cached_consume_signed_record  # type: ignore[attr-defined]
    _gossipsub_mod.maybe_consume_signed_record = cached_consume_signed_record  # type: ignore[attr-defined]
    _pubsub_mod.Pubsub._teardown_if_connected = _safe_teardown_if_connected  # type: ignore[method-assign]  # type: ignore[method-assign]
    _installed = True
    return True


# ---------------------------------------------------------------------------- patch 2


async def _until_closed(swarm: Any, muxed_conn: Any) -> None:
    """Return once ``muxed_conn`` is closed or the swarm has finished, whichever is first."""
    closed = getattr(muxed_conn, "event_closed", None)
    async with trio.open_nursery() as nursery:

        async def conn_closed() -> None:
            if isinstance(closed, trio.Event):
                await closed.wait()
            else:  # a muxer without the event: poll its is_closed (cheap, once a second)
                while not muxed_conn.is_closed:
                    await trio.sleep(1.0)
            nursery.cancel_scope.cancel()

        async def swarm_finished() -> None:
            await swarm.manager.wait_finished()
            nursery.cancel_scope.cancel()

        nursery.start_soon(conn_closed)
        nursery.start_soon(swarm_finished)


def release_inbound_slots(swarm: Any) -> bool:
    """Patch 2 on one ``Swarm``: an inbound connection's slot lives as long as the connection.

    Replaces the instance's ``_do_handle_inbound_connection`` (see the module docstring).
    Idempotent; returns False (nothing installed) on a libp2p other than 0.8.1.
    """
    if getattr(libp2p, "__version__", None) != PATCHED_VERSION:
        return False
    if getattr(swarm, "_tvote_releases_inbound_slots", False):
        return True
    original = swarm._do_handle_inbound_connection

    async def handle_inbound(read_write_closer: Any, maddr: Any, failure_event: Any) -> None:
        if isinstance(read_write_closer, IMuxedConn):  # QUIC/WebTransport: library path
            await original(read_write_closer, maddr, failure_event)
            return
        remote = swarm._build_remote_multiaddr(read_write_closer)
        if remote is not None and not await swarm.connection_gate.is_allowed(remote):
            with contextlib.suppress(Exception):
                await read_write_closer.close()
            failure_event.conn_incoming_error = True
            if swarm.metric_send_channel is not None:
                await swarm.metric_send_channel.send(failure_event)
            return
        raw_conn = RawConnection(read_write_closer, False)
        try:
            muxed_conn = await swarm.upgrade_inbound_raw_conn(raw_conn, maddr)
        except Exception as exc:  # refused, failed or timed out: the library's own cleanup ran
            log.debug("inbound connection on %s not established: %s", maddr, exc)
            with contextlib.suppress(Exception):
                await raw_conn.close()
            return
        # The library waits for swarm.manager.wait_finished() here: the slot would be held
        # until the host stops. Hold it while the connection is open, no longer.
        await _until_closed(swarm, muxed_conn)

    swarm._do_handle_inbound_connection = handle_inbound
    swarm._tvote_releases_inbound_slots = True
    return True


def inbound_slots(swarm: Any) -> tuple[int, int]:
    """(slots in use, slots in total) of the swarm's inbound limiter; (0, 0) if it has none."""
    limiter = getattr(swarm, "_inbound_limiter", None)
    if limiter is None:
        return 0, 0
    return int(limiter.borrowed_tokens), int(limiter.total_tokens)
