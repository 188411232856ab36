"""Relayed connections between members (node.p2p.nat), in process on loopback.

A direct dial to ``b`` is made to fail (a port nobody listens on); ``a`` then reaches it through a member
that speaks circuit relay v2's HOP (learned from identify, not configured), where ``b`` holds a
reservation. The relayed connection is gated and banned like any other. The real NAT is in
tests/netns/test_netns_nat.py.
"""

from __future__ import annotations

import trio
from p2p_cluster import seed_for, start_node, wait_until

from node.p2p import peer_id_from_seed


def test_a_member_reaches_a_reserved_member_through_a_relay_and_the_gate_and_bans_hold() -> None:
    members = ["rl-r", "rl-a", "rl-b"]
    allowed = [peer_id_from_seed(seed_for(n)) for n in members]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            r = await start_node(nursery, "rl-r", allowed_peers=allowed, relay_service=True, dht_discovery=False)
            b = await start_node(nursery, "rl-b", bootstrap=[r.addr], allowed_peers=allowed, relays=[r.addr],
                                 reachability="private", dht_discovery=False)
            a = await start_node(nursery, "rl-a", bootstrap=[r.addr], allowed_peers=allowed, dht_discovery=False)
            o = await start_node(nursery, "rl-o", bootstrap=[r.addr], dht_discovery=False)  # not a member
            nodes = [r, a, b, o]
            try:
                assert await wait_until(lambda: b.host.counters.relay_reservations >= 1, 15)
                assert b.host.counters.reachability == 2 and b.host.nat.circuit_addrs == [
                    f"{r.addr}/p2p-circuit/p2p/{b.peer_id}"]
                assert r.host.counters.relay_reservations == 0 and a.host.counters.reachability == 0
                assert await wait_until(lambda: r.peer_id in a.host.connected_peer_ids, 10)
                await trio.sleep(0.5)  # identify: a learns that r speaks HOP
                nowhere = f"/ip4/127.0.0.1/tcp/1/p2p/{b.peer_id}"  # b's direct address fails at once

                assert await a.host.connect(nowhere)
                assert a.host.counters.relayed_dials == 1
                assert b.peer_id in a.host.connected_peer_ids
                assert [str(p) for p in a.host.nat.relayed_peers()] == [b.peer_id]
                assert await wait_until(lambda: b.host.counters.relayed_peers == 1, 5)
                a.host.publish_nowait(b"over-the-relay:a")
                b.host.publish_nowait(b"over-the-relay:b")
                assert await wait_until(lambda: b"over-the-relay:a" in b.payloads()
                                        and b"over-the-relay:b" in a.payloads(), 15)

                # An outsider gets nowhere: the relay (a member) closes it after the handshake.
                assert not await o.host.connect(nowhere)
                assert o.host.counters.relayed_dials == 0 and b.peer_id not in o.host.connected_peer_ids
                assert r.host.counters.refused_outsider_conns >= 1

                # A ban closes the relayed connection and is not routed around through the relay.
                a.host.ban(b.peer_id)
                assert await wait_until(lambda: b.peer_id not in a.host.connected_peer_ids, 5)
                assert not await a.host.connect(nowhere)
                assert a.host.counters.relayed_dials == 1 and a.host.counters.refused_dials >= 1
            finally:
                with trio.move_on_after(20):
                    for x in nodes:
                        await x.host.close()
                nursery.cancel_scope.cancel()

    trio.run(main)
