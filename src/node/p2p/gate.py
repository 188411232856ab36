"""Peer-id gate: who may hold a connection to this host (bans and the member allowlist).

py-libp2p 0.8.1 has no peer-id connection gater: its ``ConnectionGate`` filters IP
addresses only, and its ``INotifee.connected`` fires after the muxer has started, the
connection is registered and pubsub/identify/DHT have been told about the peer. The remote
peer id is first known at the **end of the Noise XX handshake** (the responder learns the
initiator's identity from the third handshake message; the initiator from the second).
``GatedNoiseTransport`` checks the id right there, inside the security upgrade, and a
refused peer's connection is closed before multistream-select offers a muxer: no yamux
session, no stream, no pubsub/identify/DHT traffic, no ``SwarmConn``, no ``connected``
event, and the swarm's upgrade fails through its error path, which releases the inbound
slot at once. The refused dialer sees its muxer negotiation fail.

A peer is refused when it is banned, or when an allowlist is set and the peer is neither
on it (the admitted members) nor one of the explicitly configured extra peers
(bootstrap/relay roles). With no allowlist (``None``) only bans apply: bare test hosts and
benches behave as before.

The same gate refuses:

* dials (``install_dial_gate``: the swarm's ``dial_peer`` is wrapped on our instance, so
  ``host.connect``, ``host.new_stream``, the DHT and the swarm's auto-connector never open
  a socket to a refused peer);
* DHT routing-table entries (``GossipHost``'s routing table asks ``admits``);
* GossipSub: the app-specific score of a refused peer is -1e9, so a peer that was
  connected when the allowlist changed is never grafted while its disconnect completes.

All methods run on the host's Trio thread; ``allowed`` may be read from any thread (the
state is one immutable tuple replaced atomically).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import trio
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.crypto.keys import KeyPair, PrivateKey
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.security.exceptions import HandshakeFailure
from libp2p.security.noise.transport import Transport as NoiseTransport

log = logging.getLogger(__name__)

BANNED = "banned"
OUTSIDER = "not on the member allowlist"


def parse_ids(peer_ids: Iterable[str]) -> frozenset[ID]:
    """Base58 peer ids -> IDs; raises ``ValueError`` naming the first bad one."""
    out = set()
    for p in peer_ids:
        try:
            out.add(ID.from_base58(p))
        except Exception as exc:
            raise ValueError(f"not a libp2p peer id: {p!r}") from exc
    return frozenset(out)


class PeerGate:
    """Decides whether a peer may hold a connection; counts what it refuses."""

    def __init__(self, counters: Any, banned: set[ID]) -> None:
        self._counters = counters
        self.banned = banned  # the host's set, mutated by ban()/unban()
        # (members or None, extras): one tuple, replaced atomically by set_allowed.
        self._state: tuple[frozenset[ID] | None, frozenset[ID]] = (None, frozenset())

    # -- configuration --------------------------------------------------------------

    def set_allowed(self, members: Iterable[str] | None, extra: Iterable[str] | None = None) -> None:
        """Replace the allowlist (``None`` = no allowlist); ``extra=None`` keeps the extras."""
        new_members = None if members is None else parse_ids(members)
        new_extra = self._state[1] if extra is None else parse_ids(extra)
        self._state = (new_members, new_extra)

    @property
    def allowed(self) -> frozenset[str] | None:
        """The admitted members (base58), or None when no allowlist is set."""
        members = self._state[0]
        return None if members is None else frozenset(p.to_base58() for p in members)

    @property
    def member_ids(self) -> frozenset[ID] | None:
        """The admitted members as IDs (None when no allowlist is set)."""
        return self._state[0]

    @property
    def extra(self) -> frozenset[str]:
        return frozenset(p.to_base58() for p in self._state[1])

    @property
    def active(self) -> bool:
        """True when an allowlist is set."""
        return self._state[0] is not None

    # -- decisions -------------------------------------------------------------------

    def refusal(self, peer_id: ID) -> str | None:
        """Why ``peer_id`` may not connect (``BANNED``/``OUTSIDER``), or None if it may."""
        if peer_id in self.banned:
            return BANNED
        members, extra = self._state
        if members is not None and peer_id not in members and peer_id not in extra:
            return OUTSIDER
        return None

    def admits(self, peer_id: ID) -> bool:
        return self.refusal(peer_id) is None

    def is_member(self, peer_id: ID) -> bool:
        """On the allowlist (extras are not members); every peer is when none is set."""
        members = self._state[0]
        return members is None or peer_id in members

    def count_refused_conn(self, reason: str) -> None:
        if reason == BANNED:
            self._counters.banned_conns_closed += 1
        else:
            self._counters.refused_outsider_conns += 1


class GatedNoiseTransport(NoiseTransport):
    """Noise XX that refuses a peer the gate does not admit, right after the handshake.

    The check runs inside the security upgrade, so a refused connection never reaches the
    muxer negotiation (see the module docstring). The refusal is a ``HandshakeFailure``,
    which the upgrader turns into ``SecurityUpgradeFailure`` and the swarm handles as a
    failed upgrade (debug log, raw connection closed, inbound slot released).
    """

    def __init__(self, libp2p_keypair: KeyPair, noise_privkey: PrivateKey, gate: PeerGate) -> None:
        super().__init__(libp2p_keypair, noise_privkey=noise_privkey)
        self.gate = gate

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        return await self._admit(await super().secure_inbound(conn), "inbound")

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        return await self._admit(await super().secure_outbound(conn, peer_id), "outbound")

    async def _admit(self, secure_conn: ISecureConn, direction: str) -> ISecureConn:
        peer_id = secure_conn.get_remote_peer()
        reason = self.gate.refusal(peer_id)
        if reason is None:
            return secure_conn
        self.gate.count_refused_conn(reason)
        log.debug("refusing %s connection of %s after the Noise handshake: %s", direction, peer_id, reason)
        with trio.CancelScope(shield=True), trio.move_on_after(1.0), contextlib.suppress(Exception):
            await secure_conn.close()
        raise HandshakeFailure(f"peer {peer_id} refused: {reason}")


def install_dial_gate(swarm: Any, gate: PeerGate, on_refused: Callable[[], None]) -> None:
    """Wrap ``swarm.dial_peer`` on this instance: refused peers are never dialled.

    Every dial of 0.8.1 by peer id goes through ``Swarm.dial_peer`` (``host.connect``,
    ``Swarm.new_stream`` and so every protocol that opens a stream, the auto-connector),
    looked up on the instance, so the wrapper sees them all; it raises the swarm's own
    ``SwarmException`` before any socket is opened (and before the swarm's negative dial
    cache would remember a failure).
    """
    if getattr(swarm, "_tvote_dial_gate", False):
        return
    original = swarm.dial_peer

    async def dial_peer(peer_id: ID) -> Any:
        reason = gate.refusal(peer_id)
        if reason is not None:
            on_refused()
            raise SwarmException(f"dial to {peer_id} refused: {reason}")
        return await original(peer_id)

    swarm.dial_peer = dial_peer
    swarm._tvote_dial_gate = True
