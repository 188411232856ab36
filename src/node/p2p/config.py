"""Configuration for a gossip host, with the reasons behind each default.

Every number that py-libp2p 0.8.1 would otherwise pick for us silently is set here on
purpose (see issue 5 for the measurements that motivated them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import multiaddr
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.p2p.addrs import all_loopback, check_advertised, parse_advertise, parse_listen

DEFAULT_TOPIC = "tvote/votes/1"


def _is_relay_addr(addr: object) -> bool:
    """A dialable peer multiaddr (transport + /p2p/<id>), itself not relayed."""
    if not isinstance(addr, str) or "/p2p-circuit" in addr:
        return False
    try:
        m = multiaddr.Multiaddr(addr)
        info_from_p2p_addr(m)
    except Exception:
        return False
    return len(list(m.protocols())) >= 2


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class GossipConfig:
    """Settings of one ``GossipHost``.

    Identity: exactly one of ``seed`` (32 bytes) or ``key_file`` (mode 0600, see
    ``identity.load_seed``). Payloads are opaque bytes: nothing here knows about votes.
    """

    seed: bytes | None = None
    key_file: str | None = None

    listen_host: str = "127.0.0.1"
    listen_port: int = 0  # 0 = ephemeral; read the real one from GossipHost.listen_addrs
    # Multiaddrs to listen on (/ip4/IP/tcp/PORT); empty: listen_host and listen_port above.
    listen: Sequence[str] = ()
    # What peers should dial (signed peer record, identify, DHT answers); empty: the addresses we
    # listen on, which must then be dialable (no wildcard: see addrs.check_advertised).
    advertise: Sequence[str] = ()
    bootstrap: Sequence[str] = ()  # full multiaddrs with /p2p/<peer id>
    topic: str = DEFAULT_TOPIC
    banned: Sequence[str] = ()  # peer ids banned before start (bans restored from the log)

    # Member allowlist (peer ids, base58). None = no allowlist: any peer that is not banned
    # may connect (bare test hosts and benches rely on it). When set, a peer that is neither
    # on it nor in extra_peers is refused right after the Noise handshake (before any
    # muxer, pubsub or DHT state), as a dial target and in the DHT routing table, and
    # counted in counters.refused_outsider_conns. Replace it at run time with
    # GossipHost.set_allowed / ThreadedGossipHost.set_allowed (membership changes).
    allowed_peers: Collection[str] | None = None
    # Peers admitted besides the members while an allowlist is set: bootstrap/relay roles
    # the operator configured explicitly. Bootstrap addresses are *not* admitted
    # implicitly: a removed member's address may still sit in an old bootstrap list.
    extra_peers: Sequence[str] = ()

    # GossipSub v1.1 mesh (the seed's parameters).
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    # py-libp2p's heartbeat interval is an *int* number of seconds (default 120 s!);
    # 1 s keeps GRAFT/PRUNE and IHAVE gossip responsive for a small trustee cluster.
    heartbeat_interval: int = 1
    heartbeat_initial_delay: float = 0.1
    strict_signing: bool = True

    # Committee delivery (issue 15). With GossipSub's mesh every receiver gets each message once
    # per mesh peer that relays it (~3 copies at N=4, ~6 at N=10 with D=6) and relays it again: at
    # ~1 ms of Python per copy that was 77-94 % of a trustee's CPU. When an allowlist is set, it
    # admits at most direct_max_peers other members, and this host holds a connection to every one
    # of them that is subscribed, a message is published on ``direct_topic``: sent by its origin
    # straight to every member (GossipSub v1.1 flood publishing, scored peers only) and never
    # relayed, so each member receives it once. Otherwise (a member unreachable, no allowlist, a
    # large committee) it goes on ``topic`` through the mesh as before. A member that still misses
    # a direct message (a connection lost in flight) gets it from IHAVE/IWANT gossip at the next
    # heartbeat or, at the latest, from the cluster log (R13): completeness never rested on gossip.
    direct_delivery: bool = True
    direct_max_peers: int = 32

    # Seen-cache: LRU by count, expiry by age (both bounded, see seen.py).
    seen_cache_size: int = 10_000
    seen_ttl: float = 60.0

    # Router spam limit (GossipSub "max_messages_per_topic_per_second", per forwarding
    # peer, *including our own publishes*). In 0.8.1 this check runs only after the
    # envelope signature and our validator, right before forwarding, so it cannot save CPU;
    # its only effect is to silently stop *forwarding* (the message was already delivered
    # locally). Left at the library default of 10/s it would cap the whole cluster at 10
    # gossip messages/s per origin. We set it well above the honest maximum (a node
    # handles ~150-200 gossip messages/s at ~5 ms each) so it never drops honest traffic,
    # keep it finite so a runaway peer is still bounded, pace our own publishing below
    # it, and count every rejection (counters.spam_limited).
    spam_limit_per_peer: float = 1000.0

    # Our own per-author limit, applied in the validator wrapper *before* the node's
    # (expensive, per-vote) validation hook. None = off. A node that wants "a flood from
    # one peer must not slow honest votes" turns this on (messages/s, burst).
    author_rate_limit: tuple[float, float] | None = None

    # Eclipse / IP-colocation protection. On loopback every peer has the IP 127.0.0.1, so
    # GossipSub's "mesh must span >= 3 distinct IPs" rule can never be met and the P7
    # colocation penalty would punish every honest peer equally: both are switched off
    # when we listen on loopback (None = decide from listen_host) and on otherwise. Our
    # eclipse defence does not rest on IP diversity anyway: the trustee set is configured,
    # several bootstrap peers are dialled, and the node's validator rejects non-members.
    eclipse_protection: bool | None = None
    min_mesh_diversity_ips: int = 3
    ip_colocation_weight: float = 5.0
    ip_colocation_threshold: int = 2

    # Peer scoring (v1.1): P4 invalid messages lowers a forwarder's score; a peer below
    # publish_threshold has its messages dropped before signature verification (cheap
    # flood defence); the app-specific score pushes banned peers far below every gate.
    invalid_message_weight: float = 10.0
    invalid_message_decay: float = 0.99
    publish_threshold: float = -1000.0
    gossip_threshold: float = -500.0
    graylist_threshold: float = -2000.0

    # Publishing: bounded send queue drained by one Trio task.
    send_queue_size: int = 10_000
    # Pause publishing while any peer's outbound RPC queue holds this many RPCs: real
    # back-pressure from slow receivers instead of drops.
    outbound_high_water: int = 16
    # Depth of each per-peer outbound RPC queue. 0.8.1 hard-codes 32 and drops on full;
    # relayed (forwarded) messages get no back-pressure at all, so a receiver that is
    # briefly slower than its peers drops forwards. We deepen every peer's queue once it
    # is created: memory is bounded (depth x max payload per peer) and a forward waits
    # for the TCP/yamux window instead of being lost. Still-full drops are counted.
    outbound_queue_size: int = 1024
    # py-libp2p 0.8.1's yamux sends a WINDOW_UPDATE frame after *every* read by default
    # (PY_YAMUX_RELEASE_ON_READ=1): with one read per pubsub RPC that is an extra
    # encrypted frame and syscall per message each way. False sets the variable to 0
    # (go-yamux behaviour: credit returned in half-window batches). Process-wide, read by
    # the library at each call; an explicit PY_YAMUX_RELEASE_ON_READ in the environment wins.
    yamux_release_on_read: bool = False
    # Reuse verified signed peer records instead of re-verifying identical bytes on every
    # RPC (see _patches.py; process-wide, py-libp2p 0.8.1 only).
    memoize_peer_records: bool = True
    # Free a swarm inbound-connection slot when the connection closes (see _patches.py,
    # patch 2). False = py-libp2p 0.8.1's behaviour: the slot is held until the host stops
    # and the host refuses every inbound connection after 250 in its lifetime.
    release_inbound_slots: bool = True
    # Run push_msg inside the stream's read loop instead of one managed task per received
    # message (see _patches.py, patch 4; topics with synchronous validators only, i.e. ours).
    # False = py-libp2p 0.8.1's loop.
    inline_push: bool = True
    max_publish_rate: float | None = None  # msgs/s; None = 0.8 * spam_limit_per_peer

    # Delivery to the node: bounded (messages buffered for the consumer).
    delivery_queue_size: int = 100_000
    deliver_own: bool = False  # the node handles its own payloads directly
    max_payload_bytes: int = 512 * 1024  # 0.8.1's max RPC frame is 1 MiB

    # Discovery: dial bootstrap peers until connected, then ask the DHT for the rest.
    discovery_interval: float = 2.0
    # Dial every peer the DHT routing table learns (False: bootstrap peers only, which
    # tests use to build a fixed line topology).
    dht_discovery: bool = True
    dial_timeout: float = 5.0

    # NAT traversal (nat.py, issue 18 item 7). relay_service: relay circuits (circuit relay v2
    # HOP) for the members, which alone can connect. relays: full multiaddrs of member relays on
    # which this host reserves a slot while it is not publicly reachable. reachability: "auto"
    # (AutoNAT, asked of directly connected members, when relays are given), "public" or
    # "private" (the operator knows; "private" reserves at once).
    relay_service: bool = False
    relays: Sequence[str] = ()
    reachability: str = "auto"
    reachability_interval: float = 300.0  # seconds between AutoNAT checks once the answer is known

    # Shutdown: after unsubscribing, how long to let in-flight RPCs settle.
    close_grace: float = 0.5
    close_drain_timeout: float = 10.0

    @property
    def direct_topic(self) -> str:
        """The topic of committee delivery: published to every member at once, never relayed."""
        return f"{self.topic}/direct"

    @property
    def listen_addrs(self) -> list[str]:
        if self.listen:
            return list(self.listen)
        proto = "ip6" if ":" in self.listen_host else "ip4"
        return [f"/{proto}/{self.listen_host}/tcp/{self.listen_port}"]

    @property
    def on_loopback(self) -> bool:
        if not self.listen and not self.advertise:
            return _is_loopback(self.listen_host)
        return all_loopback([*self.listen_addrs, *self.advertise])

    @property
    def eclipse_protection_effective(self) -> bool:
        if self.eclipse_protection is not None:
            return self.eclipse_protection
        return not self.on_loopback

    @property
    def publish_rate_effective(self) -> float:
        if self.max_publish_rate is not None:
            return min(self.max_publish_rate, 0.9 * self.spam_limit_per_peer)
        return 0.8 * self.spam_limit_per_peer

    def validate(self) -> None:
        """Reject settings that would break the mesh or identity at start, not at runtime."""
        if (self.seed is None) == (self.key_file is None):
            raise ValueError("give exactly one of seed or key_file")
        if not (0 < self.degree_low <= self.degree <= self.degree_high):
            raise ValueError("need 0 < D_low <= D <= D_high")
        if self.direct_max_peers < 1:
            raise ValueError("direct_max_peers must be positive (set direct_delivery=False to turn it off)")
        if self.heartbeat_interval < 1:
            raise ValueError("py-libp2p 0.8.1 heartbeat interval is whole seconds (>= 1)")
        if self.send_queue_size <= 0 or self.delivery_queue_size <= 0:
            raise ValueError("queue sizes must be positive")
        if self.outbound_queue_size < 32:
            raise ValueError("outbound_queue_size below the library default of 32 makes no sense")
        if not (0 < self.outbound_high_water < self.outbound_queue_size):
            raise ValueError("outbound_high_water must be below outbound_queue_size")
        if self.reachability not in ("auto", "public", "private"):
            raise ValueError(f"reachability must be auto, public or private, not {self.reachability!r}")
        if isinstance(self.relays, str):
            raise ValueError("relays is a collection of multiaddrs, not one string")
        for r in self.relays:
            if not _is_relay_addr(r):
                raise ValueError(f"relay {r[:120]!r} is not a peer multiaddr (/ip4/HOST/tcp/PORT/p2p/PEER_ID)")
        if self.reachability == "private" and not self.relays:
            raise ValueError("reachability 'private' needs at least one relay to reserve a slot on")
        for a in self.listen:
            parse_listen(a)
        for a in self.advertise:
            parse_advertise(a)
        check_advertised(self.listen_addrs, list(self.advertise))
        if isinstance(self.allowed_peers, str) or isinstance(self.extra_peers, str):
            raise ValueError("allowed_peers and extra_peers are collections of peer ids, not one string")
