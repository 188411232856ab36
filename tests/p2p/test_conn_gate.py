"""Connections: the inbound-slot leak of py-libp2p 0.8.1, the peer-id gate (bans and the
member allowlist), unban, health accessors, and 10,000 connect/disconnect cycles.

Real hosts on 127.0.0.1. Churn comes from ``p2p_churn.ChurnDialer`` (the library's own
TCP/multistream/Noise/yamux pieces, no host state), which runs a cycle in ~3-8 ms where a
full libp2p host needs ~450 ms.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from p2p_churn import CLOSED, ESTABLISHED, REFUSED, ChurnDialer, churn_seed, run_plan
from p2p_cluster import Node, cluster, seed_for, start_node, wait_full_mesh, wait_until

from node.p2p import GossipConfig, GossipHostStopped, ThreadedGossipHost, peer_id_from_seed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _target(node: Node) -> tuple[str, int, ID]:
    m = multiaddr.Multiaddr(node.addr)
    return m.value_for_protocol("ip4"), int(m.value_for_protocol("tcp")), ID.from_base58(node.peer_id)


async def churn(node: Node, plan: Sequence[tuple[str, Sequence[ChurnDialer], int]], concurrency: int = 12) -> dict:
    """Run ``plan`` = [(kind, dialers, cycles)] in this Trio loop; outcome counts per kind."""
    host, port, target = _target(node)
    out: dict[str, dict[str, int]] = {}
    for (kind, _, _), counts in zip(plan, await run_plan(host, port, target, plan, concurrency), strict=True):
        per = out.setdefault(kind, {})
        for k, v in counts.items():
            per[k] = per.get(k, 0) + v
    return out


async def churn_from_process(node: Node, spec: list[tuple[str, str, int, int]], concurrency: int = 12) -> dict:
    """Run a plan ``[(kind, seed_prefix, identities, cycles)]`` from a separate dialer
    process (the second core), while ``node`` serves in this one."""
    host, port, target = _target(node)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2] / "src"), env.get("PYTHONPATH", "")])
    proc = await trio.run_process(
        [sys.executable, str(Path(__file__).with_name("p2p_churn.py")), host, str(port), target.to_base58(),
         json.dumps(spec), str(concurrency)],
        capture_stdout=True, env=env,
    )
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def dialers(prefix: str, n: int) -> list[ChurnDialer]:
    return [ChurnDialer(churn_seed(f"{prefix}{i}")) for i in range(n)]


async def slots_settle(node: Node, at_most: int, timeout: float = 5.0) -> tuple[int, int]:
    await wait_until(lambda: node.host.inbound_slots()[0] <= at_most, timeout)
    return node.host.inbound_slots()


async def gossip_both_ways(a: Node, b: Node, tag: str, timeout: float = 15.0) -> None:
    a.host.publish_nowait(f"{tag}:from-a".encode())
    b.host.publish_nowait(f"{tag}:from-b".encode())
    assert await wait_until(lambda: f"{tag}:from-a".encode() in b.payloads(), timeout), tag
    assert await wait_until(lambda: f"{tag}:from-b".encode() in a.payloads(), timeout), tag


# ---------------------------------------------------------------------------- issue 1: slot leak


def test_library_leaks_an_inbound_slot_per_closed_connection() -> None:
    """Reproduction (library behaviour, our patch off): every inbound connection that
    completed its upgrade keeps its slot after it closed; the 251st connect/disconnect
    cycle and every later inbound dial, a fresh honest peer's included, are refused."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            target = await start_node(nursery, "leak-t", release_inbound_slots=False)
            t0 = time.monotonic()
            out = await churn(target, [("full", dialers("leak-o", 300), 300)], concurrency=8)
            per_cycle = (time.monotonic() - t0) / 300
            assert out["full"] == {ESTABLISHED: 250, REFUSED: 50}, out
            # all 250 connections are closed...
            assert await wait_until(lambda: not target.host.connected_peer_ids, 10), target.host.connected_peer_ids
            assert target.host.inbound_slots() == (250, 250)  # ...and still hold every slot
            honest = await start_node(nursery, "leak-h")
            assert not await honest.host.connect(target.addr)  # deaf to a fresh honest peer
            assert target.peer_id not in honest.host.connected_peers()
            print(f"library: deaf after 250 connect/disconnect cycles ({per_cycle * 1000:.1f} ms/cycle)")
            for n in (honest, target):
                await n.host.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_inbound_slots_are_released_when_connections_close() -> None:
    """Pins _patches.release_inbound_slots: fails without it (deaf after 250 cycles)."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            target = await start_node(nursery, "slot-t")
            out = await churn(target, [("full", dialers("slot-o", 300), 300)], concurrency=8)
            assert out["full"] == {ESTABLISHED: 300}, out
            assert await slots_settle(target, 0) == (0, 250)
            honest = await start_node(nursery, "slot-h", bootstrap=[target.addr])
            await wait_full_mesh([target, honest])
            assert target.host.inbound_slots()[0] == 1  # the honest peer's live connection
            await gossip_both_ways(target, honest, "after-300")
            for n in (honest, target):
                await n.host.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


# ---------------------------------------------------------------------------- issue 2: bans


class _Spy(INotifee):
    """Records every peer whose connection reached the swarm (``connected``)."""

    def __init__(self) -> None:
        self.connected: list[ID] = []

    async def connected(self, network: INetwork, conn: INetConn) -> None:  # type: ignore[override]
        self.connected.append(conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()


def test_banned_peer_is_refused_after_the_handshake_before_the_muxer() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            x_id = peer_id_from_seed(seed_for("gb-x"))
            churner = ChurnDialer(churn_seed("gb-c"))
            a = await start_node(nursery, "gb-a", banned=[x_id])
            a.host.ban(churner.peer_id.to_base58())
            spy = _Spy()
            a.host.host.get_network().register_notifee(spy)
            # A real host, banned: its dial completes Noise, then a closes before the muxer.
            x = await start_node(nursery, "gb-x", bootstrap=[a.addr])
            assert not await x.host.connect(a.addr)
            # The raw dialer shows where: the handshake succeeds, the muxer offer finds a closed conn.
            out = await churn(a, [("noise", [churner], 20), ("full", [churner], 20)], concurrency=4)
            assert out == {"noise": {REFUSED: 20}, "full": {REFUSED: 20}}, out
            await trio.sleep(0.5)
            assert spy.connected == []  # never a registered connection: no SwarmConn, no notifee
            assert a.host.counters.banned_conns_closed >= 41
            assert x_id not in a.host.topic_peers() and x_id not in a.host.connected_peer_ids
            assert await slots_settle(a, 0) == (0, 250)  # a refused peer never holds a slot
            for n in (x, a):
                await n.host.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


# ---------------------------------------------------------------------------- issue 3: allowlist


def test_allowlist_keeps_outsiders_out_of_the_mesh() -> None:
    members = ["al-a", "al-b", "al-c"]
    allowed = [peer_id_from_seed(seed_for(n)) for n in members]

    async def main() -> None:
        async with cluster(members, allowed_peers=allowed) as (nursery, nodes):
            a, b, c = nodes
            await wait_full_mesh(nodes)
            # An outsider (no allowlist itself) dials a member, and keeps trying (its discovery).
            o = await start_node(nursery, "al-o", bootstrap=[a.addr, b.addr])
            try:
                assert not await o.host.connect(a.addr)
                a.host.publish_nowait(b"members-only")
                assert await wait_until(lambda: all(b"members-only" in n.payloads() for n in (b, c)), 10)
                o.host.publish_nowait(b"from-outsider")
                await trio.sleep(2.5)  # a heartbeat or two, a discovery round of o
                for n in nodes:
                    assert o.peer_id not in n.host.connected_peer_ids
                    assert o.peer_id not in n.host.mesh_peers()
                    assert o.peer_id not in n.host.topic_peers()
                    assert o.peer_id not in n.host.routing_table_peers()
                    assert b"from-outsider" not in n.payloads()
                assert o.payloads() == set() and o.host.mesh_peers() == []
                assert a.host.counters.refused_outsider_conns >= 1
                assert b.host.counters.refused_outsider_conns >= 1
                # refused as a dial target too (no socket opened), counted: ours and the library's
                assert not await a.host.connect(o.addr)
                assert a.host.counters.refused_dials == 1
                with pytest.raises(SwarmException, match="refused"):  # what the DHT/auto-connector get
                    await a.host.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(o.addr)))
                assert a.host.counters.refused_dials == 2
                await gossip_both_ways(b, c, "members-still")
                assert a.host.connected_member_count == 2

                # Membership change at run time: b leaves the allowlist of a.
                assert await wait_until(lambda: b.peer_id in a.host.routing_table_peers(), 10)
                a.host.set_allowed([a.peer_id, c.peer_id])
                assert await wait_until(lambda: b.peer_id not in a.host.connected_peer_ids, 10)
                assert a.host.counters.evicted_peers == 1
                assert b.peer_id not in a.host.mesh_peers()
                assert a.host.allowed == frozenset({a.peer_id, c.peer_id})
                await trio.sleep(2.5)  # a's DHT refresh asks c, which still lists b; b redials a
                assert b.peer_id not in a.host.routing_table_peers()
                assert b.peer_id not in a.host.connected_peer_ids
                await gossip_both_ways(a, c, "after-eviction")
            finally:
                await o.host.close()

    trio.run(main)


def test_extra_peers_are_admitted_and_no_allowlist_admits_everyone() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            relay_id = peer_id_from_seed(seed_for("ex-r"))
            a = await start_node(nursery, "ex-a", allowed_peers=[], extra_peers=[relay_id])
            r = await start_node(nursery, "ex-r", bootstrap=[a.addr])
            await wait_full_mesh([a, r])
            assert a.host.connected_member_count == 0  # an extra peer is not a member
            await gossip_both_ways(a, r, "extra")
            a.host.set_allowed(None)  # no allowlist: everyone not banned may connect
            o = await start_node(nursery, "ex-o", bootstrap=[a.addr])
            assert await wait_until(lambda: o.peer_id in a.host.connected_peer_ids, 10)
            assert a.host.counters.refused_outsider_conns == 0
            with pytest.raises(ValueError, match="not a libp2p peer id"):
                a.host.set_allowed(["not-a-peer-id"])
            assert a.host.allowed is None
            for n in (o, r, a):
                await n.host.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


# ---------------------------------------------------------------------------- issue 4: unban


def test_unban_restores_reachability_and_gossip() -> None:
    """Two hosts, no DHT discovery (no third party can re-introduce the peer): only what
    unban() restores brings the connection back, whichever side dialled first."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "ub-a", dht_discovery=False)
            x = await start_node(nursery, "ub-x", bootstrap=[a.addr], dht_discovery=False)  # x dials a
            await wait_full_mesh([a, x])

            # a (the listener) bans x; x's redials are refused; a unbans: a redials x.
            a.host.ban(x.peer_id)
            assert await wait_until(lambda: x.peer_id not in a.host.connected_peer_ids, 10)
            assert not await x.host.connect(a.addr)
            await trio.sleep(2.5)  # x's discovery loop retries its bootstrap peer (refused)
            assert x.peer_id not in a.host.connected_peer_ids
            a.host.unban(x.peer_id)
            await wait_full_mesh([a, x])
            await gossip_both_ways(a, x, "unban-1")

            # x (the dialer: a is its bootstrap) bans a, then unbans: x redials a.
            x.host.ban(a.peer_id)
            assert await wait_until(lambda: a.peer_id not in x.host.connected_peer_ids, 10)
            x.host.unban(a.peer_id)
            await wait_full_mesh([a, x])
            await gossip_both_ways(a, x, "unban-2")
            for n in (x, a):
                await n.host.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


# ---------------------------------------------------------------------------- issue 5: health


def test_threaded_health_and_death_of_the_trio_thread(caplog: pytest.LogCaptureFixture) -> None:
    h1 = ThreadedGossipHost(GossipConfig(seed=seed_for("th1"))).start()
    h2 = ThreadedGossipHost(GossipConfig(seed=seed_for("th2"), bootstrap=[h1.listen_addrs[0]])).start()
    try:
        assert h1.alive and h1.error is None
        deadline = time.monotonic() + 15
        while h2.peer_id not in h1.connected_peer_ids and time.monotonic() < deadline:
            time.sleep(0.05)
        assert h1.connected_peer_ids == frozenset({h2.peer_id})
        assert h1.connected_member_count == 1
        h1.set_allowed([h2.peer_id])
        assert h1.allowed == frozenset({h2.peer_id}) and h1.connected_member_count == 1
        assert h1.inbound_slots() == (1, 250)

        def boom() -> None:
            async def crash() -> None:
                raise RuntimeError("injected failure in a gossip task")

            assert h1.gossip._nursery is not None
            h1.gossip._nursery.start_soon(crash)

        with caplog.at_level(logging.ERROR, logger="node.p2p.threaded"):
            h1._call(boom)
            deadline = time.monotonic() + 15
            while h1.alive and time.monotonic() < deadline:
                time.sleep(0.05)
            assert h1._thread is not None
            h1._thread.join(15)
        assert not h1.alive
        assert isinstance(h1.error, RuntimeError) and "injected" in str(h1.error)
        assert any("Trio thread died" in r.getMessage() for r in caplog.records)
        assert h1.connected_peer_ids == frozenset() and h1.connected_member_count == 0
        for call in (lambda: h1.ban(h2.peer_id), lambda: h1.unban(h2.peer_id),
                     lambda: h1.set_allowed(None), h1.connected_peers, lambda: h1.connect(h2.listen_addrs[0])):
            with pytest.raises(GossipHostStopped) as ei:
                call()
            assert ei.value.__cause__ is h1.error
        assert not h1.publish(b"after-death")
        h1.close()  # harmless on a dead host
        assert h2.alive
    finally:
        h2.close()
        h1.close()
    assert not h2.alive and h2.error is None
    with pytest.raises(GossipHostStopped):
        h2.ban(h1.peer_id)


# ---------------------------------------------------------------------------- issue 6: 10k cycles


@pytest.mark.timeout(300)
def test_ten_thousand_connect_disconnect_cycles() -> None:
    """10,000 cycles from outsiders and banned peers against one host, from a separate dialer
    process; afterwards honest peers still connect and gossip both ways, and no inbound slot
    is left behind.

    Phase 1 (no allowlist, as bare hosts run): 300 full connections of distinct outsiders
    (the unpatched library is deaf after 250) and 700 handshakes of 3 banned peers. Phase 2
    (allowlist set): 2,000 TCP connect-and-close, 2,000 TCP connections sending 16 junk
    bytes, 3,000 outsider and 2,000 banned handshakes, all refused.
    """
    names = ["tk-t", "tk-a", "tk-b"]
    members = [peer_id_from_seed(seed_for(n)) for n in names] + [peer_id_from_seed(seed_for("tk-late"))]
    banned = [ChurnDialer(churn_seed(f"tk-x{i}")).peer_id.to_base58() for i in range(3)]

    async def main() -> None:
        async with cluster(names) as (nursery, nodes):
            t, a, b = nodes  # t is the target; a and b dialled it (its bootstrap role)
            await wait_full_mesh(nodes)
            for x in banned:
                t.host.ban(x)
            t0 = time.monotonic()
            phase1 = await churn_from_process(t, [("full", "tk-o", 300, 300), ("noise", "tk-x", 3, 700)])
            t1 = time.monotonic()
            assert phase1["outcomes"] == [{ESTABLISHED: 300}, {REFUSED: 700}], phase1
            t.host.set_allowed(members)
            phase2 = await churn_from_process(t, [("tcp", "tk-s", 1, 2000), ("junk", "tk-s", 1, 2000),
                                                  ("noise", "tk-o", 300, 3000), ("noise", "tk-x", 3, 2000)])
            t2 = time.monotonic()
            assert phase2["outcomes"] == [{CLOSED: 2000}, {CLOSED: 2000}, {REFUSED: 3000}, {REFUSED: 2000}], phase2
            c = t.host.counters
            assert c.banned_conns_closed == 2700 and c.refused_outsider_conns == 3000, c.snapshot()

            # Slots back to normal: only the honest members' live connections hold one.
            in_use, total = await slots_settle(t, 2)
            assert in_use <= 2 and total == 250
            assert t.host.connected_peer_ids == {a.peer_id, b.peer_id}
            await gossip_both_ways(t, a, "after-10k")
            await gossip_both_ways(b, t, "after-10k-b")
            # A fresh honest member still connects (inbound) and gossips.
            late = await start_node(nursery, "tk-late", bootstrap=[t.addr], allowed_peers=members)
            try:
                assert await wait_until(lambda: late.peer_id in t.host.mesh_peers(), 15)
                await gossip_both_ways(t, late, "late")
            finally:
                await late.host.close()
            print(f"10,000 cycles: phase 1 (1,000) {t1 - t0:.1f}s, phase 2 (9,000) {t2 - t1:.1f}s, "
                  f"{(t2 - t0) / 10:.2f} ms/cycle; slots after: {in_use}/{total}")

    trio.run(main)
