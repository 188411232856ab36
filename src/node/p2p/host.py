"""Trio-native gossip host: py-libp2p 0.8.1 TCP + Noise XX + yamux, GossipSub v1.1, Kademlia.

``GossipHost`` is the network edge of a trustee node. It moves opaque payloads (the node
puts a batch of individually signed votes in one payload) and knows nothing about votes:
the node plugs in a cheap synchronous ``validate(author_peer_id, payload)`` that runs
before a message is forwarded, and a delivery callback ``on_deliver(author, payload)``.

Everything here runs on one Trio thread. ``threaded.ThreadedGossipHost`` is the boundary
for the synchronous rest of the system (see README.md in this folder).

What py-libp2p 0.8.1 does that we had to work around (measured, see issue 5):

* The subscription channel holds 32 messages and ``notify_subscriptions`` drops on full
  with only a log line. We override ``notify_subscriptions`` to hand each message straight
  to our delivery callback (no channel, no extra task hop, nothing dropped silently).
* The per-peer outbound RPC queue holds 32 RPCs and drops on full; ``Pubsub.publish``
  never yields, so a tight loop floods it. We publish from a bounded send queue drained by
  one task that waits while any peer's outbound queue is above a high-water mark and keeps
  under the router's spam limit. Library drops that still happen are counted.
* The router's message cache (IHAVE/IWANT) keys messages by ``from + seqno`` even when a
  custom message id is configured, while the seen-cache uses the custom id: IHAVE ids
  would never look "seen" and peers would re-request everything gossiped. We also record
  the ``from + seqno`` alias in the seen-cache.
* There is no peer-id connection gater. Ours (``gate.py``) refuses banned peers, and
  peers off the member allowlist when one is set, at the end of the Noise handshake
  (before any muxer, stream or pubsub state exists), refuses them as dial targets and in
  the DHT routing table; a network notifee closes any that still get through.
* An inbound connection's swarm slot is held until the host stops (250 in a lifetime, then
  the host is deaf): ``_patches.release_inbound_slots`` frees it when the connection closes.
* Stopping the pubsub service while RPCs arrive raises "Nursery is closed to new
  arrivals": ``close`` stops intake, drains, unsubscribes, disconnects every peer and only
  then lets the services stop.
* Adaptive gossip ("v2.0") would move D_low/D_high and stretch the heartbeat to >= 30 s
  when its health score drops: disabled, the seed's parameters are fixed.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import blake3
import libp2p
import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.routing_table import RoutingTable
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from . import _patches
from .config import GossipConfig
from .gate import OUTSIDER, GatedNoiseTransport, PeerGate, install_dial_gate, parse_ids
from .identity import key_pair_from_seed, load_key_pair
from .nat import Traversal
from .seen import SeenCache

log = logging.getLogger(__name__)

Validator = Callable[..., bool]  # (author, payload) or (author, payload, envelope) -> accept?
EnvelopeFn = Callable[[], tuple[bytes, bytes]]  # -> (the signed pubsub Message bytes, the author's signature)
DeliverFn = Callable[[str, bytes], None]

UNBAN_ADDR_TTL = 3600  # seconds the addresses restored by unban() stay in the peerstore


def envelope_of(msg: rpc_pb2.Message) -> tuple[bytes, bytes]:
    """What the author signed (libp2p-pubsub: the Message without key and signature) and its signature."""
    bare = rpc_pb2.Message(data=msg.data, topicIDs=msg.topicIDs, from_id=msg.from_id, seqno=msg.seqno)
    return bare.SerializeToString(), bytes(msg.signature)


def message_id(msg: rpc_pb2.Message) -> bytes:
    """GossipSub message id: BLAKE3 of the payload only.

    Content addressing makes the same payload one message whoever relays it and whatever
    seqno it carries, so a replayed batch is suppressed by the seen-cache.
    """
    return blake3.blake3(msg.data).digest()


@dataclass
class GossipCounters:
    """Monotonic counters (read from any thread; written only on the Trio thread)."""

    published: int = 0  # payloads handed to GossipSub by the publisher task
    publish_rejected: int = 0  # publish() refused: queue full (non-blocking) or closing
    delivered: int = 0  # payloads given to on_deliver
    delivery_drops: int = 0  # on_deliver raised / consumer queue full
    validated: int = 0  # remote payloads accepted by the validator
    rejected_invalid: int = 0  # node validator said no
    rejected_oversize: int = 0
    rejected_rate: int = 0  # author over author_rate_limit
    rejected_banned: int = 0  # from a banned author (should be rare: blacklist is first)
    wrong_topic: int = 0  # messages for a topic we are not subscribed to (ignored)
    validator_errors: int = 0  # node validator raised (treated as reject)
    own_publish_drops: int = 0  # our own message not queued to a peer (queue full/oversize)
    forward_drops: int = 0  # a relayed message not queued to a peer (queue full/oversize)
    spam_limited: int = 0  # router spam limit stopped a message from being forwarded
    backpressure_waits: int = 0  # publisher paused for a full outbound queue
    duplicate_payloads: int = 0  # publish of a payload already seen (same BLAKE3 id): not resent
    copies_in: int = 0  # message copies received from peers (each relay's copy counts; duplicates too)
    duplicate_copies: int = 0  # of those, copies of a message already seen (dropped before validation)
    direct_published: int = 0  # own payloads published on the direct topic (to every member, not relayed)
    targeted_published: int = 0  # ... of which meant for some members only (publish(..., to=...))
    relayed_copies: int = 0  # copies of other authors' messages we sent on (mesh relaying)
    direct_kept: int = 0  # others' direct messages, delivered and not handed to the router (relayed by nobody)
    push_errors: int = 0  # handling a received message raised (logged; the read loop goes on)
    banned_conns_closed: int = 0  # banned peers' connections refused after the handshake (or closed on open)
    refused_outsider_conns: int = 0  # connections of peers off the allowlist refused after the handshake
    refused_dials: int = 0  # dials to banned / non-allowlisted peers refused before any socket
    evicted_peers: int = 0  # connected peers disconnected because set_allowed() removed them
    # NAT traversal (nat.py). Gauges: reachability 0 unknown / 1 public / 2 private (AutoNAT or
    # configured); relayed_peers = connected peers reached only through a relay. Counters:
    # reservations made on relays, connections opened through a relay.
    reachability: int = 0
    relayed_peers: int = 0
    relay_reservations: int = 0
    relayed_dials: int = 0

    @property
    def drops(self) -> int:
        """Messages this host failed to send or deliver (not counting validator rejects)."""
        return (
            self.publish_rejected
            + self.delivery_drops
            + self.own_publish_drops
            + self.forward_drops
            + self.spam_limited
        )

    def snapshot(self) -> dict[str, int]:
        d = asdict(self)
        d["drops"] = self.drops
        return d


class _GatedRoutingTable(RoutingTable):
    """Kademlia routing table that never (re)admits a peer the gate refuses.

    ``RoutingTable.remove_peer`` alone is not enough (issue 5): the periodic refresh and
    every inbound KAD stream re-add peers, so bans and the allowlist are enforced on
    ``add_peer``.
    """

    gate: PeerGate

    async def add_peer(self, peer_obj: PeerInfo | ID, *, skip_server_mode_check: bool = False) -> bool:
        peer_id = peer_obj.peer_id if isinstance(peer_obj, PeerInfo) else peer_obj
        if not self.gate.admits(peer_id):
            return False
        return await super().add_peer(peer_obj, skip_server_mode_check=skip_server_mode_check)


class _Router(GossipSub):
    """GossipSub with drop accounting (every silent drop of 0.8.1 becomes a counter) and
    committee delivery on ``direct_topic`` (see ``GossipConfig.direct_delivery``)."""

    counters: GossipCounters
    my_id_bytes: bytes
    direct_topic: str | None = None
    # Our own direct messages meant for some members only (message id -> their peer ids): set by the
    # publisher just before it hands the message to GossipSub, taken here when GossipSub asks whom to send to.
    targets: dict[bytes, frozenset[ID]]

    def _get_peers_to_send(
        self, topic_ids: Iterable[str], msg_forwarder: ID, origin: ID, msg_id: bytes | None = None
    ) -> Iterable[ID]:
        topics = list(topic_ids)
        if self.direct_topic is None or self.direct_topic not in topics:
            for peer in super()._get_peers_to_send(topics, msg_forwarder, origin, msg_id):
                if origin != self.pubsub.my_id:
                    self.counters.relayed_copies += 1
                yield peer
            return
        if origin != self.pubsub.my_id:
            return  # its origin sent it to every member itself: nobody relays a direct message
        # Flood publishing (GossipSub v1.1): every subscribed peer (or those the message is meant
        # for); router.publish applies the score publish gate to each, and graylisted peers are
        # left out here as for the mesh.
        scorer = self.scorer
        only = self.targets.pop(msg_id, None) if msg_id is not None else None
        for peer in self.pubsub.peer_topics.get(self.direct_topic, set()):
            if peer in (msg_forwarder, origin) or (only is not None and peer not in only):
                continue
            if scorer is not None and scorer.is_graylisted(peer, [self.direct_topic]):
                continue
            yield peer

    def _handle_dropped_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, reason: str) -> None:
        for msg in rpc.publish:
            if msg.from_id == self.my_id_bytes:
                self.counters.own_publish_drops += 1
            else:
                self.counters.forward_drops += 1
        super()._handle_dropped_rpc(peer_id, rpc, reason)

    async def publish(self, msg_forwarder: ID, pubsub_msg: rpc_pb2.Message) -> None:
        """Forward a delivered message; another origin's direct message goes nowhere, so not through here.

        Pubsub hands every delivered message to the router to forward. For a direct message of another
        origin ``_get_peers_to_send`` yields nobody, but the router's publish first rate-counts it,
        files it for equivocation checks and in the message cache, and looks for IDONTWANT and
        observer peers: ~2 % of an N=10 trustee's CPU for nothing sent (issue 15). Kept out of the
        cache, it is also never offered by IHAVE gossip, as a message relayed by nobody should not be.
        """
        if (self.direct_topic is not None and pubsub_msg.from_id != self.my_id_bytes
                and list(pubsub_msg.topicIDs) == [self.direct_topic]):
            self.counters.direct_kept += 1
            return
        await super().publish(msg_forwarder, pubsub_msg)

    def _check_spam_protection(self, peer_id: ID, msg: rpc_pb2.Message) -> bool:
        ok = super()._check_spam_protection(peer_id, msg)
        if not ok:
            self.counters.spam_limited += 1
        return ok


class _Pubsub(Pubsub):
    """Pubsub that delivers straight to our sink and records the mcache id alias."""

    sink: Callable[[rpc_pb2.Message], None]
    counters: GossipCounters
    outbound_queue_size: int
    inline_push: bool = False

    async def continuously_read_stream(self, stream: INetStream) -> None:
        if self.inline_push and libp2p.__version__ == _patches.PATCHED_VERSION:
            await _patches.read_rpcs_inline(self, stream, self._count_push_error)
        else:
            await super().continuously_read_stream(stream)

    def _count_push_error(self) -> None:
        self.counters.push_errors += 1

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder != self.my_id:
            self.counters.copies_in += 1
            if self._is_msg_seen(msg):
                self.counters.duplicate_copies += 1
                return
        await super().push_msg(msg_forwarder, msg)

    async def _handle_new_peer(self, peer_id: ID) -> None:
        await super()._handle_new_peer(peer_id)
        q = self.peer_queues.get(peer_id)
        if q is not None:
            # 0.8.1 creates every RpcQueue with the hard-coded depth 32 (see config).
            q._queue.max_size = max(q._queue.max_size, self.outbound_queue_size)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        # Replaces the 32-slot channel (drops on full) with a direct, counted hand-off.
        self.sink(publish_message)

    def _is_subscribed_to_msg(self, msg: rpc_pb2.Message) -> bool:
        ok = super()._is_subscribed_to_msg(msg)
        if not ok:
            self.counters.wrong_topic += 1
        return ok

    def _mark_msg_seen(self, msg: rpc_pb2.Message) -> None:
        super()._mark_msg_seen(msg)
        # mcache/IHAVE use from+seqno ids; without this alias every IHAVE looks unseen.
        self.seen_messages.add(msg.from_id + msg.seqno)


class _ConnWatch(INotifee):
    """Network notifee: keeps the connected-peer snapshot; backstop of the peer-id gate.

    ``GatedNoiseTransport`` refuses banned/outsider peers before their connection exists;
    this closes one that still opens (e.g. a handshake that was under way when the peer
    was banned or dropped from the allowlist).
    """

    def __init__(self, owner: GossipHost) -> None:
        self._owner = owner

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer_id = conn.muxed_conn.peer_id
        self._owner._refresh_connected()
        reason = self._owner.gate.refusal(peer_id)
        if reason is not None:
            self._owner.gate.count_refused_conn(reason)
            log.debug("closing connection of refused peer %s (%s)", peer_id, reason)
            # Shielded (bounded): a host shutting down must not leave it half-closed.
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                try:
                    await conn.close()
                except Exception:  # closing a half-open conn may race its own teardown
                    log.debug("close of refused peer conn failed", exc_info=True)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._owner._refresh_connected()
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()


def _cause(exc: BaseException) -> str:
    """The innermost reason of a failed dial (py-libp2p wraps it in SwarmException and groups), one line."""
    seen = exc
    while True:
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[0]
        elif seen.__cause__ is not None:
            seen = seen.__cause__
        else:
            break
    text = f"{type(seen).__name__}: {seen}" if str(seen) else type(seen).__name__
    return text.splitlines()[0][:300] if text else type(exc).__name__


class GossipHost:
    """One libp2p host gossiping opaque payloads on one topic.

    Lifecycle (Trio)::

        gh = GossipHost(cfg, validate=v, on_deliver=d)
        async with trio.open_nursery() as n:
            await n.start(gh.serve)      # listening, subscribed, bootstrap dialled
            gh.publish_nowait(b"...")    # or await gh.publish(b"...")
            await gh.close()             # graceful; serve() returns

    Thread safety: only ``publish_threadsafe`` and reading ``counters``, ``serving``,
    ``connected_peer_ids``, ``connected_member_count`` and ``allowed`` may be done from
    other threads; everything else (``ban``, ``unban``, ``set_allowed``, ...) belongs to
    the Trio thread (use ``ThreadedGossipHost`` from synchronous code).

    ``validate`` runs on the Trio thread for every remote message before it is forwarded:
    it must be cheap and must not block (no database, no etcd). Exceptions count as a
    reject. Our own publishes are not passed to it (the node signed them itself).
    ``on_deliver`` runs on the Trio thread for every accepted remote message exactly once
    (seen-cache); it must not block either: hand the payload to a queue.
    """

    def __init__(
        self,
        config: GossipConfig,
        validate: Validator | None = None,
        on_deliver: DeliverFn | None = None,
    ) -> None:
        config.validate()
        self.config = config
        if not config.yamux_release_on_read:
            os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
        if config.memoize_peer_records and not _patches.install():
            log.warning("libp2p %s is not 0.8.1: peer-record memoisation not installed", libp2p.__version__)
        self._validate = validate
        # A validator that takes a third argument gets the author's signed envelope on demand: the
        # evidence a node needs to blame the author of a forged vote (R7, events.envelope).
        self._validate_envelope = validate is not None and len(inspect.signature(validate).parameters) >= 3
        self._on_deliver = on_deliver
        self.counters = GossipCounters()
        self.banned_ids: set[ID] = set()
        # Peer-id gate (bans + member allowlist), checked right after the Noise handshake.
        self.gate = PeerGate(self.counters, self.banned_ids)
        self.gate.set_allowed(
            None if config.allowed_peers is None else list(config.allowed_peers), list(config.extra_peers)
        )
        # What ban() cleared, restored by unban(): peer -> its addresses at ban time.
        self._ban_addrs: dict[ID, list[multiaddr.Multiaddr]] = {}
        self._connected: frozenset[str] = frozenset()  # snapshot, readable from any thread
        self._member_count = 0
        self._banned_bytes: set[bytes] = set()  # same set as raw ids: no ID() per message
        self._author_cache: dict[bytes, str] = {}
        self._buckets: dict[str, tuple[float, float]] = {}

        key_pair: KeyPair = (
            key_pair_from_seed(config.seed)
            if config.seed is not None
            else load_key_pair(config.key_file or "")
        )
        self._key_pair = key_pair
        self.peer_id: str = ID.from_pubkey(key_pair.public_key).to_base58()
        self._my_id_bytes = ID.from_pubkey(key_pair.public_key).to_bytes()

        # Security: Noise XX only (0.8.1 would also offer TLS, SECIO and *plaintext* by
        # default), gated by peer id at the end of the handshake. Muxer: yamux only.
        sec_opt = {
            TProtocol(NOISE_PROTOCOL_ID): GatedNoiseTransport(
                key_pair, create_x25519_key_pair().private_key, self.gate
            )
        }
        self.host = new_host(
            key_pair=key_pair,
            sec_opt=sec_opt,
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            listen_addrs=self._listen_maddrs(),
            # Advertise what the operator said peers dial (--advertise), or else our listen addresses;
            # never NAT-observed ones: what we sign into our peer record is what members dial.
            announce_addrs=[multiaddr.Multiaddr(a) for a in config.advertise] or None,
            disable_identify_address_discovery=True,
        )
        swarm = self.host.get_network()
        if config.release_inbound_slots and not _patches.release_inbound_slots(swarm):
            log.warning("libp2p %s is not 0.8.1: inbound slot release not installed", libp2p.__version__)
        install_dial_gate(swarm, self.gate, self._count_refused_dial)

        eclipse = config.eclipse_protection_effective
        score = ScoreParams(
            p4_invalid_messages=TopicScoreParams(
                weight=config.invalid_message_weight, cap=1e6, decay=config.invalid_message_decay
            ),
            p6_appl_slack_weight=1.0,
            app_specific_score_fn=self._app_score,
            # P7: off on loopback (every peer shares 127.0.0.1), on elsewhere.
            p7_ip_colocation_weight=config.ip_colocation_weight if eclipse else 0.0,
            p7_ip_colocation_threshold=config.ip_colocation_threshold,
            publish_threshold=config.publish_threshold,
            gossip_threshold=config.gossip_threshold,
            graylist_threshold=config.graylist_threshold,
        )
        router = _Router(
            # v1.1 only: v1.2 adds an IDONTWANT control RPC to every mesh peer for every
            # message received, which roughly doubles per-message RPC work in 0.8.1.
            protocols=[PROTOCOL_ID_V11],
            degree=config.degree,
            degree_low=config.degree_low,
            degree_high=config.degree_high,
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_initial_delay=config.heartbeat_initial_delay,
            score_params=score,
            adaptive_gossip_enabled=False,
            spam_protection_enabled=True,
            max_messages_per_topic_per_second=config.spam_limit_per_peer,
            eclipse_protection_enabled=eclipse,
            min_mesh_diversity_ips=config.min_mesh_diversity_ips,
        )
        router.counters = self.counters
        router.my_id_bytes = self._my_id_bytes
        self.router = router
        pubsub = _Pubsub(
            self.host,
            router,
            strict_signing=config.strict_signing,
            msg_id_constructor=message_id,
            seen_ttl=math.ceil(config.seen_ttl),
            allowed_topics={config.topic, config.direct_topic},
        )
        # Replace the TTL-only, thread-backed LastSeenCache with the bounded one. Each
        # message takes two entries (BLAKE3 id + from/seqno alias), hence 2x.
        pubsub.seen_messages.stop()
        pubsub.seen_messages = SeenCache(2 * config.seen_cache_size, config.seen_ttl)  # type: ignore[assignment]
        pubsub.sink = self._on_message
        pubsub.counters = self.counters
        pubsub.outbound_queue_size = config.outbound_queue_size
        pubsub.inline_push = config.inline_push
        pubsub.set_topic_validator(config.topic, self._topic_validator, False)
        pubsub.set_topic_validator(config.direct_topic, self._topic_validator, False)
        router.direct_topic = config.direct_topic
        router.targets = {}
        self.pubsub = pubsub

        self.dht = KadDHT(self.host, DHTMode.SERVER)
        # Loopback/private addresses are exempt from the DHT's subnet-diversity caps in
        # 0.8.1 (_subnet_key returns None for non-global IPs), so nothing to relax there.
        rt = _GatedRoutingTable(self.host.get_id(), self.host)
        rt.gate = self.gate
        self.dht.routing_table = rt
        self.dht.peer_routing.routing_table = rt

        self.host.get_network().register_notifee(_ConnWatch(self))
        # AutoNAT server, relayed connections in, relaying for members if configured (nat.py).
        self.nat = Traversal(self)

        # Send queue: thread-safe, bounded; drained by _publisher on the Trio thread.
        # (payload, the members it is meant for: None = every member)
        self._sendq: queue.Queue[tuple[bytes, frozenset[ID] | None]] = queue.Queue(maxsize=config.send_queue_size)
        self._publisher_idle = False
        self._wake = trio.Event()
        self._intake_open = False
        self._discovery_scope = trio.CancelScope()
        self._nat_scope = trio.CancelScope()
        self._token: trio.lowlevel.TrioToken | None = None
        self._trio_thread: int | None = None
        self._nursery: trio.Nursery | None = None
        self._close_requested = trio.Event()
        self._closed = trio.Event()
        self._publisher_done = trio.Event()
        self.listen_addrs: list[str] = []
        self.bound_addrs: list[str] = []
        self.dial_errors: dict[str, str] = {}  # peer id -> why our last dial to it failed (start checks read it)
        for banned in config.banned:
            self.ban(banned)
        for info in self._bootstrap_infos():
            if self.gate.refusal(info.peer_id) == OUTSIDER:
                log.warning("bootstrap peer %s is neither on the allowlist nor in extra_peers: not dialled",
                            info.peer_id)

    # ------------------------------------------------------------------ identity / info

    def _listen_maddrs(self) -> list[multiaddr.Multiaddr]:
        return [multiaddr.Multiaddr(a) for a in self.config.listen_addrs]

    def connected_peers(self) -> list[str]:
        """Peer ids with an open connection."""
        return [p.to_base58() for p in self.host.get_connected_peers()]

    def mesh_peers(self) -> list[str]:
        """Peer ids in our GossipSub mesh for the topic."""
        return [p.to_base58() for p in self.router.mesh.get(self.config.topic, set())]

    def topic_peers(self) -> list[str]:
        """Peer ids known to be subscribed to the topic."""
        return [p.to_base58() for p in self.pubsub.peer_topics.get(self.config.topic, set())]

    def routing_table_peers(self) -> list[str]:
        return [p.to_base58() for p in self.dht.routing_table.get_peer_ids()]

    # ------------------------------------------------------------------ health (any thread)

    @property
    def serving(self) -> bool:
        """True from ``serve``'s start until ``close`` begins or ``serve`` dies."""
        return self._nursery is not None and self._intake_open

    @property
    def connected_peer_ids(self) -> frozenset[str]:
        """Peers with an open connection: a snapshot kept by the notifee, cheap from any thread."""
        return self._connected

    @property
    def connected_member_count(self) -> int:
        """How many connected peers are members (on the allowlist; all peers when none is set)."""
        return self._member_count

    def inbound_slots(self) -> tuple[int, int]:
        """(in use, total) inbound-connection slots of the swarm (see ``_patches``)."""
        return _patches.inbound_slots(self.host.get_network())

    def _refresh_connected(self) -> None:
        conns = self.host.get_network().connections
        live = [p for p, c in conns.items() if c]
        self._connected = frozenset(p.to_base58() for p in live)
        self._member_count = sum(1 for p in live if self.gate.is_member(p))

    def _count_refused_dial(self) -> None:
        self.counters.refused_dials += 1

    # ------------------------------------------------------------------ allowlist

    @property
    def allowed(self) -> frozenset[str] | None:
        """The member allowlist (base58 ids), or None when none is set. Any thread."""
        return self.gate.allowed

    def set_allowed(self, peer_ids: Iterable[str] | None, extra_peers: Iterable[str] | None = None) -> None:
        """Replace the member allowlist (``None`` removes it). Call on the Trio thread.

        ``extra_peers=None`` keeps the configured extras (bootstrap/relay roles). Connected
        peers that are no longer admitted are pruned from the mesh, dropped from the DHT
        table and disconnected (counted in ``evicted_peers``); from now on they are refused
        right after the Noise handshake and as dial targets. Invalid ids raise
        ``ValueError`` and change nothing.
        """
        self.gate.set_allowed(None if peer_ids is None else list(peer_ids), extra_peers)
        for pid in list(self.dht.routing_table.get_peer_ids()):
            if not self.gate.admits(pid):
                self.dht.routing_table.remove_peer(pid)
        for pid in list(self.host.get_connected_peers()):
            if self.gate.admits(pid):
                continue
            self.counters.evicted_peers += 1
            for topic_mesh in self.router.mesh.values():
                topic_mesh.discard(pid)
            if self._nursery is not None:
                self._nursery.start_soon(self._disconnect, pid)
        self._refresh_connected()

    # ------------------------------------------------------------------ receive path

    def _author(self, from_id: bytes) -> str:
        # ID -> base58 costs a few microseconds; there are only N authors.
        author = self._author_cache.get(from_id)
        if author is None:
            if len(self._author_cache) > 4096:  # bounded even under a flood of identities
                self._author_cache.clear()
            author = ID(from_id).to_base58()
            self._author_cache[from_id] = author
        return author

    def _rate_ok(self, author: str) -> bool:
        limit = self.config.author_rate_limit
        if limit is None:
            return True
        rate, burst = limit
        now = time.monotonic()
        if len(self._buckets) > 4096:  # authors are cheap to mint: keep the table bounded
            self._buckets.clear()
        tokens, last = self._buckets.get(author, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[author] = (tokens, now)
            return False
        self._buckets[author] = (tokens - 1.0, now)
        return True

    def _topic_validator(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Sync pubsub validator: runs after the envelope signature check, before forwarding.

        A False here means: not delivered, not forwarded, the forwarder's P4 score drops,
        and the verdict is cached by message id (later copies are rejected cheaply).
        """
        from_id = msg.from_id
        if from_id == self._my_id_bytes:
            return True
        data = msg.data
        if len(data) > self.config.max_payload_bytes:
            self.counters.rejected_oversize += 1
            return False
        author = self._author(from_id)
        if from_id in self._banned_bytes:
            self.counters.rejected_banned += 1
            return False
        if not self._rate_ok(author):
            self.counters.rejected_rate += 1
            return False
        if self._validate is not None:
            try:
                if self._validate_envelope:
                    ok = bool(self._validate(author, data, lambda: envelope_of(msg)))
                else:
                    ok = bool(self._validate(author, data))
            except Exception:
                self.counters.validator_errors += 1
                log.debug("validator raised for a message from %s", author, exc_info=True)
                return False
            if not ok:
                self.counters.rejected_invalid += 1
                return False
        self.counters.validated += 1
        return True

    def _on_message(self, msg: rpc_pb2.Message) -> None:
        if msg.from_id == self._my_id_bytes and not self.config.deliver_own:
            return
        if self._on_deliver is None:
            self.counters.delivered += 1
            return
        try:
            self._on_deliver(self._author(msg.from_id), msg.data)
        except Exception:
            self.counters.delivery_drops += 1
            log.warning("delivery callback failed; message counted as dropped", exc_info=True)
        else:
            self.counters.delivered += 1

    def _app_score(self, peer_id: ID) -> float:
        # Banned or (allowlist set) not admitted: far below every gate, never grafted.
        return -1e9 if not self.gate.admits(peer_id) else 0.0

    # ------------------------------------------------------------------ publish path

    def publish_threadsafe(self, payload: bytes, block: bool = True, timeout: float | None = None,
                           to: Iterable[str] | None = None) -> bool:
        """Queue ``payload`` for gossip from any thread. False = refused (counted).

        Blocking by default: a burst waits for room rather than being dropped. With
        ``block=False`` a full queue refuses the payload and counts it. ``to``: the peer ids
        (base58) the payload is meant for. Sent by committee delivery, it goes to those only;
        when the message takes the mesh (a member out of reach), it goes everywhere as any other.
        A peer id that does not parse raises ``ValueError`` (``gate.parse_ids``) here, in the caller, never in the
        publisher task.
        """
        targets = parse_ids(to) if to is not None else None
        if not self._intake_open:
            self.counters.publish_rejected += 1
            return False
        if len(payload) > self.config.max_payload_bytes:
            raise ValueError(f"payload of {len(payload)} bytes exceeds max_payload_bytes")
        if threading.get_ident() == self._trio_thread:
            block = False  # never block the Trio loop
        try:
            self._sendq.put((payload, targets), block=block, timeout=timeout)
        except queue.Full:
            self.counters.publish_rejected += 1
            return False
        if self._publisher_idle:
            self._kick()
        return True

    def publish_nowait(self, payload: bytes, to: Iterable[str] | None = None) -> bool:
        """Queue from the Trio thread without waiting (False and counted if full)."""
        return self.publish_threadsafe(payload, block=False, to=to)

    async def publish(self, payload: bytes, to: Iterable[str] | None = None) -> bool:
        """Queue from the Trio thread, waiting (without blocking the loop) for room."""
        while self._intake_open and self._sendq.full():
            await trio.sleep(0.001)
        return self.publish_nowait(payload, to=to)

    def _kick(self) -> None:
        if threading.get_ident() == self._trio_thread:
            self._wake.set()
        elif self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._wake.set)

    def _outbound_full(self) -> bool:
        hw = self.config.outbound_high_water
        return any(len(q) >= hw for q in self.pubsub.peer_queues.values())

    async def _publisher(self) -> None:
        """Drain the send queue at a paced rate with back-pressure from peer queues."""
        interval = 1.0 / self.config.publish_rate_effective
        next_at = trio.current_time()
        try:
            while True:
                try:
                    payload, to = self._sendq.get_nowait()
                except queue.Empty:
                    if not self._intake_open:
                        return
                    self._publisher_idle = True
                    try:
                        payload, to = self._sendq.get_nowait()  # re-check after flagging idle
                    except queue.Empty:
                        await self._wake.wait()
                        self._wake = trio.Event()
                        continue
                    finally:
                        self._publisher_idle = False
                now = trio.current_time()
                if next_at > now:
                    await trio.sleep(next_at - now)
                    now = next_at
                next_at = now + interval
                while self._outbound_full():
                    self.counters.backpressure_waits += 1
                    await trio.sleep(0.002)
                msg_id = blake3.blake3(payload).digest()
                if self.pubsub.seen_messages.has(msg_id):
                    # Content-addressed ids: GossipSub would silently swallow a repeat
                    # within the seen TTL. Count it instead (the node should not repeat).
                    self.counters.duplicate_payloads += 1
                    continue
                topic = self._publish_topic()
                if to is not None and topic != self.config.topic:
                    self.router.targets[msg_id] = to
                try:
                    await self.pubsub.publish(topic, payload)
                finally:
                    self.router.targets.pop(msg_id, None)  # taken by the router, unless publish stopped early
                self.counters.published += 1
                if topic != self.config.topic:
                    self.counters.direct_published += 1
                    if to is not None:
                        self.counters.targeted_published += 1
                await trio.lowlevel.checkpoint()
        finally:
            self._publisher_done.set()

    def _publish_topic(self) -> str:
        """``direct_topic`` when every other admitted member is connected and subscribed to it, else ``topic``.

        Direct messages are never relayed, so the origin must reach every member itself; one
        member out of reach (not yet connected, restarting, partitioned) and the message takes
        the mesh, whose relays reach it once it is back.
        """
        cfg = self.config
        members = self.gate.member_ids
        if not cfg.direct_delivery or members is None:
            return cfg.topic
        me = self.host.get_id()
        subscribed = self.pubsub.peer_topics.get(cfg.direct_topic, set())
        others = 0
        for peer in members:
            if peer == me or peer in self.banned_ids:
                continue
            others += 1
            if others > cfg.direct_max_peers or peer not in subscribed or peer not in self.pubsub.peers:
                return cfg.topic
        return cfg.direct_topic

    # ------------------------------------------------------------------ bans

    def ban(self, peer_id: str) -> None:
        """Ban a peer at the edge (R10): blacklist, disconnect, forget, refuse on reconnect.

        Call on the Trio thread. Idempotent. Messages authored by the peer are refused even
        when relayed by honest peers (the blacklist checks the origin too).
        """
        pid = ID.from_base58(peer_id)
        first = pid not in self.banned_ids
        self.banned_ids.add(pid)
        self._banned_bytes.add(pid.to_bytes())
        if self._nursery is not None:
            self.pubsub.add_to_blacklist(pid)  # also resets its pubsub stream
        else:  # not running yet (bans restored from the log at start): just record it
            self.pubsub.blacklisted_peers.add(pid)
        self.dht.routing_table.remove_peer(pid)
        for topic_mesh in self.router.mesh.values():
            topic_mesh.discard(pid)
        store = self.host.get_peerstore()
        if first:  # keep what unban() needs to make the peer reachable again
            try:
                addrs = list(store.addrs(pid))
            except Exception:  # unknown peer: PeerStoreError
                addrs = []
            if addrs:
                self._ban_addrs[pid] = addrs
        store.clear_addrs(pid)  # no redial by us or the auto-connector
        if self._nursery is not None:
            self._nursery.start_soon(self._disconnect, pid)

    def unban(self, peer_id: str) -> None:
        """Lift a ban (operator action, audited by the caller): the peer is reachable again.

        Restores the addresses ``ban`` cleared and, if we know any (or it is a bootstrap
        peer), redials it in the background and puts it back in the DHT table. We redial
        whoever dialled first: the unbanned peer cannot know the ban was lifted, and its
        swarm backs off a peer whose dials failed (0.8.1 caches "all addresses failed"
        for 60 s), so the side that lifts the ban restores the connection.
        """
        pid = ID.from_base58(peer_id)
        self.banned_ids.discard(pid)
        self._banned_bytes.discard(pid.to_bytes())
        self.pubsub.remove_from_blacklist(pid)
        addrs = self._ban_addrs.pop(pid, [])
        swarm = self.host.get_network()
        with contextlib.suppress(Exception):
            swarm.unblock_peer(pid)  # forget any failed-dial backoff
        if addrs:
            self.host.get_peerstore().add_addrs(pid, addrs, UNBAN_ADDR_TTL)
        boot = [i for i in self._bootstrap_infos() if i.peer_id == pid]
        if self._nursery is not None and (addrs or boot):
            info = PeerInfo(pid, addrs or boot[0].addrs)
            self._nursery.start_soon(self._redial_unbanned, info)

    async def _redial_unbanned(self, info: PeerInfo) -> None:
        if not self.gate.admits(info.peer_id):  # re-banned meanwhile, or not on the allowlist
            return
        if info.peer_id not in self.host.get_connected_peers() and not await self._dial(info):
            return  # the discovery loop retries bootstrap and routing-table peers
        with trio.move_on_after(self.config.dial_timeout):
            try:
                await self.dht.add_peer(info.peer_id, skip_server_mode_check=True)
            except Exception as exc:
                log.debug("DHT re-add of %s failed: %s", info.peer_id, exc)

    def is_banned(self, peer_id: str) -> bool:
        return ID.from_base58(peer_id) in self.banned_ids

    async def _disconnect(self, pid: ID) -> None:
        try:
            await self.host.disconnect(pid)
        except Exception:
            log.debug("disconnect of %s failed", pid, exc_info=True)

    # ------------------------------------------------------------------ discovery

    def _vouched_addrs(self, info: PeerInfo, given: bool) -> list[multiaddr.Multiaddr]:
        """The addresses of ``info.peer_id`` someone answerable vouches for: the ones the caller was given by
        the operator (``given``: bootstrap, an explicit connect), the operator's bootstrap entries, and those
        in the peer's own signed peer record. Never an unsigned address a third peer put in a DHT answer."""
        out: list[multiaddr.Multiaddr] = list(info.addrs) if given else []
        out += [a for b in self._bootstrap_infos() if b.peer_id == info.peer_id for a in b.addrs]
        with contextlib.suppress(Exception):  # no record, or one that does not parse
            env = self.host.get_peerstore().get_peer_record(info.peer_id)
            if env is not None:
                out += list(env.record().addrs)
        seen: set[str] = set()
        return [a for a in out if not (str(a) in seen or seen.add(str(a)))]

    def _pin_addrs(self, info: PeerInfo, given: bool) -> PeerInfo:
        """Dial only vouched addresses when there are any (issue 18: an address a peer does not own must not
        divert traffic from the real one).

        py-libp2p 0.8.1 stores the unsigned addresses of a DHT FIND_NODE answer for the peers it lists, and
        its swarm dials at most one address per transport, the first stored: an address planted by a hostile
        member (before the real one was learnt) would be the only one dialled, and every dial to that member
        would fail. Noise still proves who answers (nothing is ever *sent* to the wrong peer), but the link
        would be cut. So before dialling, the peer's stored addresses are replaced by the vouched ones, in
        that order; with none vouched (a peer known from the DHT alone) the stored ones are dialled as before.
        """
        vouched = self._vouched_addrs(info, given)
        if not vouched:
            return info
        store = self.host.get_peerstore()
        env = store.peer_record_map.get(info.peer_id)  # clear_addrs drops the record with the last address
        store.clear_addrs(info.peer_id)
        store.add_addrs(info.peer_id, vouched, UNBAN_ADDR_TTL)
        if env is not None:
            store.peer_record_map[info.peer_id] = env
        return PeerInfo(info.peer_id, vouched)

    async def _dial(self, info: PeerInfo, given: bool = False) -> bool:
        if info.peer_id == self.host.get_id():
            return False
        if not self.gate.admits(info.peer_id):
            self.counters.refused_dials += 1
            return False
        info = self._pin_addrs(info, given)
        with trio.move_on_after(self.config.dial_timeout):
            try:
                await self.host.connect(info)
                return True
            except Exception as exc:
                log.debug("dial %s failed: %s", info.peer_id, exc)
                why = _cause(exc)
                if "negative cache" not in why:  # py-libp2p's 60 s backoff hides the reason: keep the real one
                    self.dial_errors[info.peer_id.to_base58()] = why
        # Unreachable directly (behind a NAT, or we are): through a member's relay, if one has it.
        return await self.nat.dial_via_relay(info.peer_id)

    async def connect(self, maddr: str) -> bool:
        """Dial a peer by full multiaddr (``.../p2p/<id>``) and add it to the DHT table."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(maddr))
        ok = await self._dial(info, given=True)
        if ok:
            await self.dht.add_peer(info.peer_id, skip_server_mode_check=True)
        return ok

    def _bootstrap_infos(self) -> list[PeerInfo]:
        return [info_from_p2p_addr(multiaddr.Multiaddr(a)) for a in self.config.bootstrap]

    async def _nat_task(self, nursery: trio.Nursery) -> None:
        with self._nat_scope:
            await self.nat.run(nursery)

    async def _discovery_task(self) -> None:
        with self._discovery_scope:
            await self._discovery()

    async def _discovery(self) -> None:
        """Dial bootstrap peers until connected; then let the DHT find the rest.

        A late joiner knows only its bootstrap peers: it asks them (FIND_NODE for its own
        id) and dials every non-banned peer the routing table learns, so it joins the mesh
        without anyone restarting. Runs every ``discovery_interval`` seconds; cheap when
        there is nothing new.
        """
        boots = self._bootstrap_infos()
        refreshed_with: frozenset[ID] = frozenset()
        while True:
            connected = set(self.host.get_connected_peers())
            for info in boots:
                if info.peer_id in connected or not self.gate.admits(info.peer_id):
                    continue
                if await self._dial(info, given=True):
                    await self.dht.add_peer(info.peer_id, skip_server_mode_check=True)
            connected = set(self.host.get_connected_peers())
            if self.config.dht_discovery and connected and connected != refreshed_with:
                with trio.move_on_after(10):
                    try:
                        await self.dht.refresh_routing_table()
                    except Exception as exc:
                        log.debug("DHT refresh failed: %s", exc)
                refreshed_with = frozenset(connected)
            store = self.host.get_peerstore()
            learned = self.dht.routing_table.get_peer_ids() if self.config.dht_discovery else []
            for pid in learned:
                if pid in connected or not self.gate.admits(pid):
                    continue
                addrs = store.addrs(pid)
                if addrs:
                    await self._dial(PeerInfo(pid, addrs))
            await trio.sleep(self.config.discovery_interval)

    # ------------------------------------------------------------------ lifecycle

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the host until ``close()`` completes. ``started()`` once subscribed."""
        self._token = trio.lowlevel.current_trio_token()
        self._trio_thread = threading.get_ident()
        try:
            async with (
                self.host.run(listen_addrs=self._listen_maddrs()),
                background_trio_service(self.pubsub),
                background_trio_service(self.router),
                background_trio_service(self.dht),
                background_trio_service(self.nat.protocol),
            ):
                await self.pubsub.wait_until_ready()
                await self.pubsub.subscribe(self.config.topic)
                await self.pubsub.subscribe(self.config.direct_topic)
                self.listen_addrs = [str(a) for a in self.host.get_addrs()]  # advertised, with /p2p/<us>
                self.bound_addrs = [str(a) for a in self.host.get_transport_addrs()]  # the sockets we hold
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._intake_open = True
                    nursery.start_soon(self._publisher)
                    nursery.start_soon(self._discovery_task)
                    nursery.start_soon(self._nat_task, nursery)
                    task_status.started()
                    await self._close_requested.wait()
                    await self._shutdown()
                    nursery.cancel_scope.cancel()
        finally:
            # Also on a crash: publish() must refuse (counted) rather than queue forever.
            self._intake_open = False
            self._nursery = None
            self._closed.set()

    async def _shutdown(self) -> None:
        """Safe order: stop intake, drain, unsubscribe, disconnect; then services stop."""
        cfg = self.config
        # 1. stop intake: publish() refuses from now on (counted); no more dialling.
        self._intake_open = False
        self._discovery_scope.cancel()
        self._nat_scope.cancel()
        self._kick()
        with trio.move_on_after(cfg.close_drain_timeout):
            # 2. drain: everything already accepted is published and written out.
            await self._publisher_done.wait()
            while any(len(q) for q in self.pubsub.peer_queues.values()):
                await trio.sleep(0.01)
        # 3. unsubscribe: peers drop us from their mesh and stop forwarding to us.
        with trio.move_on_after(cfg.close_drain_timeout):
            await self.pubsub.unsubscribe(cfg.direct_topic)
            await self.pubsub.unsubscribe(cfg.topic)
            while any(len(q) for q in self.pubsub.peer_queues.values()):
                await trio.sleep(0.01)
        # Messages already in flight still arrive and are handled normally for a moment.
        await trio.sleep(cfg.close_grace)
        # 4. close connections *before* the pubsub service stops, so no reader task tries
        #    to spawn work into a nursery that is closing. Listeners go first so peers
        #    cannot redial us meanwhile.
        network = self.host.get_network()
        listeners = getattr(network, "listeners", {})
        for key, listener in list(listeners.items()):
            try:
                await listener.close()
            except Exception:
                log.debug("listener close failed", exc_info=True)
            listeners.pop(key, None)
        for pid in list(self.host.get_connected_peers()):
            await self._disconnect(pid)
        await trio.sleep(0.05)

    async def close(self) -> None:
        """Graceful shutdown; returns when ``serve`` has finished. Idempotent."""
        self._close_requested.set()
        await self._closed.wait()
