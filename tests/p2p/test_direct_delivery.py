"""Committee delivery (issue 15): a fully connected committee gets each message once, never relayed.

Real py-libp2p 0.8.1 hosts on 127.0.0.1. The counters ``copies_in`` (every copy a host received,
duplicates included), ``duplicate_copies`` and ``relayed_copies`` are what the figures in
``node/p2p/README.md`` are read from.
"""

from __future__ import annotations

import pytest
import trio
from p2p_cluster import cluster, seed_for, start_node, wait_full_mesh, wait_until

from node.p2p import GossipConfig
from node.p2p.identity import peer_id_from_seed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NAMES = ["da", "db", "dc", "dd"]
MEMBERS = [peer_id_from_seed(seed_for(n)) for n in NAMES]


def _publish_all(nodes, per_node: int) -> dict[str, set[bytes]]:
    for i, n in enumerate(nodes):
        for k in range(per_node):
            assert n.host.publish_nowait(f"m:{i}:{k}".encode())
    return {n.name: {f"m:{i}:{k}".encode() for i, m in enumerate(nodes) if m is not n for k in range(per_node)}
            for n in nodes}


async def _connected_to_all(nodes) -> None:
    assert await wait_until(lambda: all(n.host._publish_topic() == n.host.config.direct_topic for n in nodes), 15)


def test_a_connected_committee_receives_each_message_once_and_relays_nothing() -> None:
    async def main() -> None:
        async with cluster(NAMES, allowed_peers=MEMBERS) as (_, nodes):
            await _connected_to_all(nodes)
            want = _publish_all(nodes, 20)
            assert await wait_until(lambda: all(n.payloads() >= want[n.name] for n in nodes), 30)
            await trio.sleep(1.5)  # a heartbeat of IHAVE/IWANT gossip: no late copies either
            for n in nodes:
                c = n.host.counters
                assert len(n.received) == 60  # exactly once each, own not delivered
                assert c.direct_published == c.published == 20
                assert c.copies_in == 60 and c.duplicate_copies == 0, c.snapshot()
                assert c.relayed_copies == 0 and c.drops == 0

    trio.run(main)


def test_without_an_allowlist_the_mesh_relays_and_duplicates_arrive() -> None:
    """The behaviour direct delivery replaces: each receiver gets several copies (one per relay)."""

    async def main() -> None:
        async with cluster(NAMES) as (_, nodes):
            await wait_full_mesh(nodes)
            want = _publish_all(nodes, 20)
            assert await wait_until(lambda: all(n.payloads() >= want[n.name] for n in nodes), 30)
            await trio.sleep(1.0)
            copies = sum(n.host.counters.copies_in for n in nodes)
            assert all(n.host.counters.direct_published == 0 for n in nodes)
            assert all(len(n.received) == 60 for n in nodes)
            assert copies > 2 * 4 * 60, copies  # ~3 copies per delivery in a 4-host mesh
            assert sum(n.host.counters.relayed_copies for n in nodes) > 0

    trio.run(main)


def test_a_member_out_of_reach_sends_through_the_mesh_and_relays_reach_it() -> None:
    """Line a - b - c, all three members: a is not connected to c, so a's message takes the mesh and b relays it."""

    async def main() -> None:
        names = ["la", "lb", "lc"]
        members = [peer_id_from_seed(seed_for(n)) for n in names]
        async with trio.open_nursery() as nursery:
            b = await start_node(nursery, "lb", dht_discovery=False, allowed_peers=members)
            a = await start_node(nursery, "la", bootstrap=[b.addr], dht_discovery=False, allowed_peers=members)
            c = await start_node(nursery, "lc", bootstrap=[b.addr], dht_discovery=False, allowed_peers=members)
            assert await wait_until(lambda: len(b.host.mesh_peers()) == 2 and len(a.host.mesh_peers()) == 1
                                    and len(c.host.mesh_peers()) == 1, 15)
            assert c.peer_id not in a.host.connected_peers()
            assert a.host._publish_topic() == a.host.config.topic
            assert b.host._publish_topic() == b.host.config.direct_topic  # b reaches everyone
            for k in range(5):
                assert a.host.publish_nowait(b"a:%d" % k)
                assert b.host.publish_nowait(b"b:%d" % k)
            assert await wait_until(lambda: c.payloads() == {b"a:%d" % k for k in range(5)}
                                    | {b"b:%d" % k for k in range(5)}, 15)
            assert a.host.counters.direct_published == 0 and b.host.counters.direct_published == 5
            assert b.host.counters.relayed_copies >= 5  # a's messages, relayed by b to c
            for n in (a, b, c):
                await n.host.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_an_offline_member_means_mesh_delivery_and_direct_delivery_can_be_switched_off() -> None:
    async def main() -> None:
        offline = peer_id_from_seed(seed_for("offline-member"))
        async with cluster(NAMES[:3], allowed_peers=[*MEMBERS[:3], offline]) as (_, nodes):
            await wait_full_mesh(nodes)
            assert all(n.host._publish_topic() == n.host.config.topic for n in nodes)
        async with cluster(NAMES[:3], allowed_peers=MEMBERS[:3], direct_delivery=False) as (_, nodes):
            await wait_full_mesh(nodes)
            assert all(n.host._publish_topic() == n.host.config.topic for n in nodes)

    trio.run(main)


def test_direct_max_peers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="direct_max_peers"):
        GossipConfig(seed=b"\x01" * 32, direct_max_peers=0).validate()
