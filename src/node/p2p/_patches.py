"""Patches for py-libp2p 0.8.1, each kept here with an upstream-ready description.

1. Memoise the per-RPC signed-peer-record work (a measured receive-path cost).
2. Release a swarm's inbound-connection slot when the connection closes (a leak that makes
   a host deaf after 250 inbound connections in its lifetime).
3. Blacklisting a connected peer must not crash the host (``safe_teardown``).
4. Handle a received message in the stream's read loop instead of one managed task per
   message (``read_rpcs_inline``), when its topics have synchronous validators only.
5. Check a message's signature without deriving its sender's peer id from its key again at
   every message (``cached_signature_validator``).

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

Patch 4: one managed task per received message (``read_rpcs_inline``)
---------------------------------------------------------------------

What is costly (libp2p 0.8.1, ``Pubsub.continuously_read_stream``): for every message of every
RPC read from a peer's stream the loop calls ``self.manager.run_task(self.push_msg, peer_id,
msg)``. The anyio-service manager builds a ``FunctionTask`` (a ``uuid4``, a task name from the
function's qualified name, the parent found by walking the task hierarchy, a child registered
under it, a fresh ``CancelScope``), then Trio schedules it, runs it and the manager unregisters
it. Per message copy that is a few hundred microseconds of Python on a node whose whole
receive path is ~1 ms, paid again for every duplicate a relay sends.

``push_msg`` needs no task of its own when each topic of the message has only *synchronous*
validators (our case): it never waits (blacklist and seen checks, the envelope signature, the
sync validators, delivery, and the router's ``publish``, whose sends are non-blocking queue
pushes; v1.1 peers get no IDONTWANT, topics have no observers). So the patched loop awaits
``push_msg`` right there, in the order the messages arrived, and still hands a message with an
*async* validator to ``run_task`` as before (those may wait up to the validation timeout and
must not stall the stream). Everything else in the loop is the library's, line for line (size
limit, protobuf parse, signed-record check through the module attribute so patch 1 applies,
subscriptions, control to the router, metrics event, the same exception handling). An
exception from ``push_msg`` is logged and the loop goes on (a task's exception would have gone
to the service manager instead).

Upstream shape: in ``continuously_read_stream``, ``if any(v.is_async for v in
self.get_msg_validators(msg)): self.manager.run_task(...) else: await self.push_msg(...)``.
Installed per class (our ``Pubsub`` subclass calls it); ``GossipConfig.inline_push=False``
keeps the library's loop.

Patch 5: the sender's key, extracted and checked at every message (``cached_signature_validator``)
--------------------------------------------------------------------------------------------------

What is costly (libp2p 0.8.1, ``libp2p/pubsub/validators.py``, ``signature_validator``): for every
received message under strict signing it parses the sender's peer id, extracts the Ed25519 key
embedded in it (protobuf), and derives the peer id from that key again (protobuf, multihash) to
check that they match, before the one Ed25519 verify that is the point. A py-spy profile of an
N=10 trustee at 15 tx/s put 2.2 % of its CPU in those two steps, 0.4 % in the verify. The answer of
both steps is a pure function of the ``from_id`` bytes, so the patched validator keeps, per
``from_id``, the key once it has matched, and then does what the library does after that check:
the same payload (prefix and the message without key and signature) and the same verify. As there,
the key embedded in the peer id is the one used when it can be extracted (``msg.key``, which every
0.8.1 publisher also sends, is read only when it cannot). Anything else (no signature, a peer id
holding no key, as RSA senders' ids do, or a key that does not derive the id) goes to the library's
function unchanged. Bounded at ``SENDER_KEYS_MAX`` ids (cleared when full: a refill costs one library
path per sender).

Upstream shape: memoise ``(from_id) -> public key`` in ``signature_validator`` (or in ``ID``).
Installed as ``libp2p.pubsub.pubsub.signature_validator`` by ``install``, with patch 1.
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
from libp2p.io.exceptions import IOException, MessageTooLarge
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC as _orig_env_to_send
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.utils import maybe_consume_signed_record as _orig_consume
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from libp2p.pubsub.validators import signature_validator as _orig_signature_validator

log = logging.getLogger(__name__)

PATCHED_VERSION = "0.8.1"
ENV_TTL = 1.0
CONSUMED_TTL = 60.0
CONSUMED_MAX = 4096
SENDER_KEYS_MAX = 4096

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


_sender_keys: dict[bytes, Any] = {}  # from_id -> the public key it holds, checked to derive that id
_SIGNING_PREFIX = PUBSUB_SIGNING_PREFIX.encode()


def cached_signature_validator(msg: rpc_pb2.Message) -> bool:
    """Patch 5: ``signature_validator`` with each sender's key extracted and checked once."""
    if msg.signature == b"":
        return _orig_signature_validator(msg)
    key = _sender_keys.get(msg.from_id)
    if key is None:
        sender = ID(msg.from_id)
        try:
            key = sender.extract_public_key()
        except Exception:
            key = None
        if key is None or ID.from_pubkey(key) != sender:
            return _orig_signature_validator(msg)  # refused there, with the library's reasons
        if len(_sender_keys) >= SENDER_KEYS_MAX:
            _sender_keys.clear()
        _sender_keys[msg.from_id] = key
    signed = rpc_pb2.Message(data=msg.data, topicIDs=msg.topicIDs, from_id=msg.from_id, seqno=msg.seqno)
    try:
        return bool(key.verify(_SIGNING_PREFIX + signed.SerializeToString(), msg.signature))
    except Exception:
        return False


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
    """Install the wrappers into libp2p.pubsub.{pubsub,gossipsub} (and patches 3 and 5). True if active."""
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
    _pubsub_mod.signature_validator = cached_signature_validator  # type: ignore[attr-defined]
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


# ---------------------------------------------------------------------------- patch 4


async def read_rpcs_inline(pubsub: Any, stream: Any, on_error: Any = None) -> None:
    """Patch 4: ``Pubsub.continuously_read_stream`` of 0.8.1, with ``push_msg`` awaited inline.

    See the module docstring. ``on_error()`` is called (after logging) when ``push_msg`` raises.
    """
    peer_id = stream.muxed_conn.peer_id
    try:
        while pubsub.manager.is_running:
            incoming: bytes = await _pubsub_mod.read_varint_prefixed_bytes_limited(
                stream, pubsub.max_inbound_rpc_size
            )
            rpc_incoming = rpc_pb2.RPC()
            rpc_incoming.ParseFromString(incoming)
            if not _pubsub_mod.maybe_consume_signed_record(rpc_incoming, pubsub.host, peer_id):
                _pubsub_mod.logger.error("Received an invalid-signed-record, ignoring the incoming msg")
                continue
            event = _pubsub_mod.GossipsubEvent()
            event.peer_id = peer_id.pretty()
            event.message_size = len(incoming)
            if rpc_incoming.publish:
                event.publish = True
                for msg in rpc_incoming.publish:
                    if not pubsub._is_subscribed_to_msg(msg):
                        continue
                    if not pubsub.manager.is_running:
                        continue
                    if any(v.is_async for v in pubsub.get_msg_validators(msg)):
                        pubsub.manager.run_task(pubsub.push_msg, peer_id, msg)
                        continue
                    try:
                        await pubsub.push_msg(peer_id, msg)
                    except Exception:
                        log.warning("handling a message from %s failed", peer_id, exc_info=True)
                        if on_error is not None:
                            on_error()
            if rpc_incoming.subscriptions:
                event.subopts = True
                if len(rpc_incoming.subscriptions) > pubsub.max_subscriptions_per_rpc:
                    _pubsub_mod.logger.warning(
                        "Peer %s sent %d subscriptions exceeding limit %d, rejecting subscriptions",
                        peer_id, len(rpc_incoming.subscriptions), pubsub.max_subscriptions_per_rpc,
                    )
                else:
                    for message in rpc_incoming.subscriptions:
                        pubsub.handle_subscription(peer_id, message)
            if rpc_incoming.HasField("control"):
                event.control = True
                await pubsub.router.handle_rpc(rpc_incoming, peer_id)
            if stream.metric_send_channel is not None:
                await stream.metric_send_channel.send(event)
    except MessageTooLarge as error:
        _pubsub_mod.logger.warning("Inbound pubsub RPC from peer %s exceeded size limit: %s", peer_id, error)
        with contextlib.suppress(Exception):
            await stream.reset()
        pubsub._handle_dead_peer(peer_id)
    except StreamEOF:
        _pubsub_mod.logger.debug("Stream closed for peer %s, exiting read loop cleanly.", peer_id)
    except StreamError as e:
        _pubsub_mod.logger.debug("Stream error for peer %s (normal during shutdown): %s", peer_id, e)
    except (IOException, RawConnError) as e:
        _pubsub_mod.logger.debug("Connection closed for peer %s during read: %s", peer_id, e)
