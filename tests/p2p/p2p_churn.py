"""Fast connect/disconnect cycles against one host, for the connection-churn tests.

A full libp2p host as the churning dialer costs ~0.45 s per cycle in 0.8.1 (dial retries,
identify, the 0.1 s sleeps of SwarmConn cleanup and yamux close), far too slow for
thousands of cycles. ``ChurnDialer`` speaks the same wire protocol with the library's
own pieces (TCP, multistream-select, Noise XX, yamux negotiation) but keeps no state: it
opens a socket, goes as far as the cycle kind says, and closes. To the target every cycle
is a real peer connecting and disconnecting.

Cycle kinds (what the target sees):

* ``tcp``: a socket opened and closed (FIN) before any byte (port scan, dead dialer);
* ``junk``: a socket that sends 16 bytes that are not a multistream header;

(both wait for the target to drop the socket, then reset it);
* ``noise``: a completed Noise XX handshake (the peer id is authenticated), then the
  dialer offers a muxer as a real one would; a gated target has already closed;
* ``full``: handshake + yamux negotiated + the target's first yamux frame read (the
  target registered the connection and told pubsub/identify about it), then closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import sys
import time
from collections.abc import Sequence

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.upgrader import TransportUpgrader

ESTABLISHED = "established"  # full: the target registered the connection
HANDSHAKEN = "handshaken"  # noise: handshake done and a muxer agreed (the target did not refuse)
REFUSED = "refused"  # the target closed after the handshake (gated) or refused the socket
CLOSED = "closed"  # tcp: opened and closed


def churn_seed(name: str) -> bytes:
    return hashlib.sha256(b"tvote-p2p-churn:" + name.encode()).digest()


_LINGER_0 = struct.pack("ii", 1, 0)


async def _connect(host: str, port: int) -> trio.SocketStream:
    """TCP connect to a numeric IPv4 address, closed later with a reset.

    ``trio.open_tcp_stream`` would run ``getaddrinfo`` in a worker thread for every cycle
    (~half the cost of a cycle). SO_LINGER 0 makes our close an abrupt disconnect (RST):
    without it, thousands of cycles leave the target's side of many 4-tuples in TIME_WAIT
    (it often closes first) and a later SYN from a reused ephemeral port stalls for the 1 s
    SYN retransmit: measured 132 of 2,000 connects, 11 s of a 12 s run.
    """
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, _LINGER_0)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _until_closed_by_peer(sock: trio.SocketStream) -> None:
    """Wait for the target to close (it drops a connection that is not libp2p).

    Without this wait the dialer outruns the target's accept loop: the listen backlog (128
    in 0.8.1) overflows and the kernel drops SYNs, each costing a 1 s retransmit.
    """
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        while await sock.receive_some(4096):
            pass


class ChurnDialer:
    """One dialing identity (Ed25519 seed); stateless cycles against ``host:port``."""

    def __init__(self, seed: bytes) -> None:
        kp = create_new_key_pair(seed)
        self.peer_id = ID.from_pubkey(kp.public_key)
        self._upgrader = TransportUpgrader(
            {TProtocol(NOISE_PROTOCOL_ID): NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)},
            {TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        )

    async def cycle(self, kind: str, host: str, port: int, target: ID, timeout: float = 10.0) -> str:
        with trio.move_on_after(timeout):
            try:
                sock = await _connect(host, port)
            except OSError:
                return REFUSED
            try:
                if kind in ("tcp", "junk"):
                    if kind == "junk":
                        await sock.send_all(b"\xff" * 16)  # not a multistream header
                    else:
                        await sock.send_eof()  # we close our side first: the target reads EOF
                    await _until_closed_by_peer(sock)
                    return CLOSED
                return await self._upgrade(kind, RawConnection(TrioTCPStream(sock), True), target)
            except Exception:
                return REFUSED
            finally:
                await trio.aclose_forcefully(sock)
        return "timeout"

    async def _upgrade(self, kind: str, raw: RawConnection, target: ID) -> str:
        secured = await self._upgrader.upgrade_security(raw, True, target)
        try:
            await self._upgrader.upgrade_connection(secured, target)  # raises if the target closed
            if kind == "noise":
                return HANDSHAKEN
            # The target sends its first yamux frame (a stream SYN: pubsub/identify) only
            # after it has registered the connection and notified its protocols.
            data = await secured.read(12)
            return ESTABLISHED if data else REFUSED
        finally:
            await secured.close()


async def run_plan(
    host: str, port: int, target: ID, plan: Sequence[tuple[str, Sequence[ChurnDialer], int]], concurrency: int = 12
) -> list[dict[str, int]]:
    """Run ``plan`` = [(kind, dialers, cycles)], ``concurrency`` cycles at a time (dialers of
    a step round-robin); returns the outcome counts of each step."""
    jobs = [(step, kind, dialers[i % len(dialers)]) for step, (kind, dialers, n) in enumerate(plan) for i in range(n)]
    outcomes: list[dict[str, int]] = [{} for _ in plan]
    it = iter(jobs)

    async def worker() -> None:
        for step, kind, dialer in it:
            r = await dialer.cycle(kind, host, port, target)
            outcomes[step][r] = outcomes[step].get(r, 0) + 1

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return outcomes


def main(argv: list[str]) -> int:
    """``python p2p_churn.py HOST PORT TARGET_PEER_ID PLAN_JSON [CONCURRENCY]``

    PLAN_JSON: ``[[kind, seed_prefix, identities, cycles], ...]``; identity i of a step is
    ``ChurnDialer(churn_seed(f"{seed_prefix}{i}"))``. Prints one JSON line: the outcome
    counts of each step and the elapsed seconds. Used to churn from a second process (a
    second core) against a host under test.
    """
    host, port, target = argv[0], int(argv[1]), ID.from_base58(argv[2])
    spec = json.loads(argv[3])
    concurrency = int(argv[4]) if len(argv) > 4 else 12
    plan = [(kind, [ChurnDialer(churn_seed(f"{prefix}{i}")) for i in range(ids)], n) for kind, prefix, ids, n in spec]
    t0 = time.monotonic()
    outcomes = trio.run(run_plan, host, port, target, plan, concurrency)
    print(json.dumps({"outcomes": outcomes, "seconds": time.monotonic() - t0}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
