"""NAT traversal among trustees: AutoNAT with a fresh dial-back, circuit relay v2 run by members.

A trustee behind a NAT (a masquerading router, no port forwarded) can dial out to every member,
but no member can dial it; two trustees behind two NATs cannot reach each other at all. Committee
delivery (README.md) needs every member connected to every member. So:

* **Reachability.** Every host answers AutoNAT dial-back requests. A host configured with relays
  and ``reachability="auto"`` asks the members it holds a *direct* connection to (relayed
  requests are refused by the spec) to dial it back on its advertised address, and takes the
  majority verdict (``min(3, servers)`` agreeing answers). ``"public"``/``"private"`` skip the
  question. py-libp2p 0.8.1's dial-back calls ``host.connect``, which returns the connection the
  requester itself opened, so every server answers OK to a peer behind a NAT (measured,
  bench/nat_spike.py): ours dials a **new** connection (transport dial + Noise handshake with
  the expected peer id) and closes it.
* **Relay service.** A trustee with ``relay_service=True`` runs circuit relay v2's HOP role for
  whoever can connect to it, that is for members only (the peer-id gate closes every other
  connection right after the handshake). Its limits are sized for a committee's consensus
  traffic, not the spec's few-KiB "hole-punching" circuits.
* **Reservation.** A private host reserves a slot on every configured relay (``relays``: full
  multiaddrs), and again whenever the relay connection comes back; 0.8.1's refresher renews it
  before it expires.
* **Dialling through a relay.** When a direct dial to a member fails, the host dials
  ``<relay>/p2p-circuit/p2p/<member>`` through each connected member that speaks HOP (learned
  from identify), then through each configured relay. The relayed connection is upgraded like
  any other (Noise, the peer-id gate, yamux), so the gate admits it because the remote peer is
  an admitted member, whatever path its bytes take, and bans close it like any connection.

Circuit addresses are *not* put into our signed peer record: 0.8.1's ``get_addrs`` strips
"the" ``/p2p/`` component of each advertised address, which for ``<relay>/p2p/R/p2p-circuit``
is the relay's, and would advertise the relay's IP address under our peer id. Dialers try the
relays instead (above); ``circuit_addrs`` lists the addresses for the status file and operators.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.host.autonat.autonat import AutoNATService, AutoNATStatus
from libp2p.network.connection.raw_connection import ConnectionType
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport

if TYPE_CHECKING:
    from .host import GossipHost

log = logging.getLogger(__name__)

REACHABILITY = ("auto", "public", "private")
STATUS_NAMES = {AutoNATStatus.UNKNOWN: "unknown", AutoNATStatus.PUBLIC: "public", AutoNATStatus.PRIVATE: "private"}

# A member relay carries consensus traffic for as long as the member is behind its NAT: circuits
# last a day (then the host redials), and are not cut by volume; reservations for up to 64 members.
MEMBER_RELAY_LIMITS = RelayLimits(duration=24 * 3600, data=1 << 40, max_circuit_conns=256, max_reservations=64,
                                  reservation_ttl=3600)
DIALBACK_TIMEOUT = 5.0  # seconds a dial-back may take (a NAT drops the SYN: the dial hangs until this)
QUERY_TIMEOUT = 15.0  # seconds we wait for a server's verdict (its dial-back plus the round trip)
MAX_SERVERS = 5  # members asked per reachability check


class FreshDialAutoNAT(AutoNATService):
    """AutoNAT whose dial-back opens a new connection instead of reusing the requester's own."""

    def __init__(self, host: IHost, timeout: float = DIALBACK_TIMEOUT) -> None:
        super().__init__(host, serve=True)
        self.timeout = timeout

    async def _try_dial(self, peer_id: ID, addrs: list[bytes]) -> bytes | None:
        swarm: Any = self.host.get_network()
        for raw in addrs:
            try:
                maddr = multiaddr.Multiaddr(raw)
                with trio.fail_after(self.timeout):
                    transport = swarm.transport_manager.transport_for_dialing(maddr)
                    if transport is None:
                        continue
                    conn = await transport.dial(maddr)
                    try:
                        # Noise with the expected peer id: whoever answers there must be that peer.
                        await swarm.upgrader.upgrade_security(conn, True, peer_id)
                    finally:
                        await conn.close()
                return bytes(raw)
            except Exception as exc:  # trio.TooSlowError included: unreachable on this address
                log.debug("AutoNAT dial-back to %s on %r failed: %s", peer_id, raw, exc)
        return None


class Traversal:
    """The NAT traversal of one ``GossipHost``: runs on its Trio thread, started by ``serve``."""

    def __init__(self, owner: GossipHost) -> None:
        cfg = owner.config
        self.owner = owner
        host = owner.host
        # No CLIENT role: 0.8.1 would then also reserve a slot on the relay at every relayed *dial*;
        # a private host reserves explicitly (reserve()), a public one never needs a slot.
        roles = RelayRole.STOP | RelayRole.HOP if cfg.relay_service else RelayRole.STOP
        self.protocol = CircuitV2Protocol(host, limits=MEMBER_RELAY_LIMITS, allow_hop=cfg.relay_service)
        self.transport = CircuitV2Transport(host, self.protocol,
                                            RelayConfig(roles=roles, limits=MEMBER_RELAY_LIMITS))
        self.autonat = FreshDialAutoNAT(host)
        self.relays: list[PeerInfo] = [info_from_p2p_addr(multiaddr.Multiaddr(a)) for a in cfg.relays]
        self._relay_addr: dict[ID, multiaddr.Multiaddr] = {
            r.peer_id: multiaddr.Multiaddr(a) for r, a in zip(self.relays, cfg.relays, strict=True)}
        self.status = {"public": AutoNATStatus.PUBLIC, "private": AutoNATStatus.PRIVATE}.get(
            cfg.reachability, AutoNATStatus.UNKNOWN)
        self.reserved: set[ID] = set()  # relays holding a reservation of ours, on the connection we have now
        self.circuit_addrs: list[str] = []
        self._checked_at = -1e9
        owner.counters.reachability = self.status

    @property
    def private(self) -> bool:
        return self.status == AutoNATStatus.PRIVATE

    # -- the loop ------------------------------------------------------------------------------------

    async def run(self, nursery: trio.Nursery) -> None:
        """Check reachability when due; keep a reservation on every relay while private."""
        cfg = self.owner.config
        while True:
            connected = set(self.owner.host.get_connected_peers())
            self.reserved &= connected  # a reservation lives on the connection it was made on
            if cfg.reachability == "auto" and self.relays:
                due = cfg.reachability_interval if self.status != AutoNATStatus.UNKNOWN else cfg.discovery_interval
                if trio.current_time() - self._checked_at >= due:
                    await self.check()
            if self.private:
                for relay in self.relays:
                    if relay.peer_id not in self.reserved:
                        await self.reserve(relay, nursery)
            self.owner.counters.relayed_peers = len(self.relayed_peers())
            await trio.sleep(1.0)

    async def check(self) -> int:
        """Ask up to MAX_SERVERS directly connected members whether they can dial us back."""
        swarm: Any = self.owner.host.get_network()
        servers = [p for p in swarm.connections if self.owner.gate.admits(p) and not self._only_relayed(p)]
        servers = servers[:MAX_SERVERS]
        if not servers:
            return self.status
        self._checked_at = trio.current_time()
        self.autonat.dial_results.clear()
        self.autonat.confirmations = min(3, len(servers))
        addrs = [_without_peer_id(a).to_bytes() for a in self.owner.host.get_addrs()]  # what we advertise
        for server in servers:
            try:
                with trio.move_on_after(QUERY_TIMEOUT):
                    await self.autonat.query_server(server, addrs=addrs, timeout=QUERY_TIMEOUT)
                    continue
                self.autonat.dial_results[server] = False
            except Exception as exc:
                log.debug("AutoNAT query to %s failed: %s", server, exc)
                self.autonat.dial_results[server] = False
        self.autonat.update_status()
        if self.autonat.status != self.status:
            log.info("reachability: %s (AutoNAT, %d servers)", STATUS_NAMES[self.autonat.status], len(servers))
        self.status = self.autonat.status
        self.owner.counters.reachability = self.status
        return self.status

    async def reserve(self, relay: PeerInfo, nursery: trio.Nursery) -> bool:
        """Reserve a slot on ``relay`` (dialled first if need be); record our circuit address there."""
        if not self.owner.gate.admits(relay.peer_id):
            return False
        host = self.owner.host
        if relay.peer_id not in host.get_connected_peers() and not await self.owner._dial(relay):
            return False
        try:
            with trio.fail_after(self.owner.config.dial_timeout):
                stream = await host.new_stream(relay.peer_id, [HOP_PROTOCOL_ID])
            ok = await self.transport.reserve(stream, relay.peer_id, nursery)
            await stream.close()
        except Exception as exc:
            log.debug("reservation on %s failed: %s", relay.peer_id, exc)
            ok = False
        if ok:
            self.reserved.add(relay.peer_id)
            self.owner.counters.relay_reservations += 1
            addr = f"{self._relay_addr[relay.peer_id]}/p2p-circuit/p2p/{self.owner.peer_id}"
            if addr not in self.circuit_addrs:
                self.circuit_addrs.append(addr)
            log.info("reserved a relay slot: %s", addr)
        return ok

    # -- dialling ------------------------------------------------------------------------------------

    def _relay_candidates(self, target: ID) -> list[multiaddr.Multiaddr]:
        """Relays to try for ``target``: connected members that speak HOP, then the configured ones."""
        host = self.owner.host
        store = host.get_peerstore()
        out: dict[ID, multiaddr.Multiaddr] = {}
        for pid in host.get_connected_peers():
            if pid == target or not self.owner.gate.admits(pid) or self._only_relayed(pid):
                continue
            try:
                hop = HOP_PROTOCOL_ID in store.get_protocols(pid)
            except Exception:
                hop = False
            if hop:
                addr = self._relay_addr.get(pid) or self._dialable_addr(pid)
                if addr is not None:
                    out[pid] = addr
        for pid, addr in self._relay_addr.items():
            if pid != target and pid not in out and self.owner.gate.admits(pid):
                out[pid] = addr
        return list(out.values())

    async def dial_via_relay(self, target: ID) -> bool:
        """Open a relayed connection to ``target`` through the first relay that has it reserved."""
        for relay_addr in self._relay_candidates(target):
            circuit = relay_addr.encapsulate(multiaddr.Multiaddr(f"/p2p-circuit/p2p/{target}"))
            with trio.move_on_after(self.owner.config.dial_timeout):
                try:
                    await self.transport.dial(circuit)
                    self.owner.counters.relayed_dials += 1
                    log.info("connected to %s through a relay: %s", target, circuit)
                    return True
                except Exception as exc:  # 204 NO_RESERVATION: target has no slot there
                    log.debug("relayed dial %s failed: %s", circuit, exc)
        return False

    def _dialable_addr(self, pid: ID) -> multiaddr.Multiaddr | None:
        """A direct address of ``pid`` from the peerstore, with its ``/p2p/`` (a relay to dial through)."""
        try:
            addrs = self.owner.host.get_peerstore().addrs(pid)
        except Exception:
            return None
        for a in addrs:
            if "/p2p-circuit" not in str(a) and str(a).startswith(("/ip4/", "/ip6/", "/dns")):
                return _without_peer_id(a).encapsulate(multiaddr.Multiaddr(f"/p2p/{pid}"))
        return None

    # -- state -----------------------------------------------------------------------------------------

    def _only_relayed(self, peer: ID) -> bool:
        conns = self.owner.host.get_network().get_connections(peer)
        return bool(conns) and all(_is_relayed(c) for c in conns)

    def relayed_peers(self) -> list[ID]:
        """Connected peers we reach only through a relay."""
        return [p for p in self.owner.host.get_connected_peers() if self._only_relayed(p)]


def _without_peer_id(addr: multiaddr.Multiaddr) -> multiaddr.Multiaddr:
    try:
        return addr.decapsulate_code(multiaddr.protocols.P_P2P)
    except Exception:
        return addr


def _is_relayed(conn: Any) -> bool:
    try:
        if conn.get_connection_type() == ConnectionType.RELAYED:
            return True
        return any("/p2p-circuit" in str(a) for a in conn.get_transport_addresses())
    except Exception:
        return False
