"""Memoise py-libp2p 0.8.1's per-RPC signed-peer-record work (a measured receive-path cost).

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

The patch is idempotent and refuses to install on another libp2p version.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from typing import Any

import libp2p
import libp2p.pubsub.gossipsub as _gossipsub_mod
import libp2p.pubsub.pubsub as _pubsub_mod
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC as _orig_env_to_send
from libp2p.pubsub.utils import maybe_consume_signed_record as _orig_consume

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


def install() -> bool:
    """Install the wrappers into libp2p.pubsub.{pubsub,gossipsub}. True if active."""
    global _installed
    if _installed:
        return True
    if getattr(libp2p, "__version__", None) != PATCHED_VERSION:
        return False
    _pubsub_mod.env_to_send_in_RPC = cached_env_to_send_in_rpc  # type: ignore[attr-defined]
    _gossipsub_mod.env_to_send_in_RPC = cached_env_to_send_in_rpc  # type: ignore[attr-defined]
    _pubsub_mod.maybe_consume_signed_record = cached_consume_signed_record  # type: ignore[attr-defined]
    _gossipsub_mod.maybe_consume_signed_record = cached_consume_signed_record  # type: ignore[attr-defined]
    _installed = True
    return True
