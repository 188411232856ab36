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
            assert await wait_until(lambda: all(n.payloads() >= want[n.name] for n in nodes), 45)
            await trio.sleep(1.5)  # a heartbeat of IHAVE/IWANT gossip: no late copies either
            for n in nodes:
                c = n.host.counters
                assert len(n.received) == 60  # exactly once each, own not delivered
                assert c.direct_published == c.published == 20
                assert c.copies_in == 60 and c.duplicate_copies == 0, c.snapshot()
                assert c.relayed_copies == 0 and c.drops == 0
                # the others' messages never reach the router: not cached, so never offered by IHAVE
                assert c.direct_kept == 60, c.snapshot()
                cached = {m.data for m in n.host.pubsub.router.mcache.msgs.values()}
                assert not cached & want[n.name]

    trio.run(main)


def test_without_an_allowlist_the_mesh_relays_and_duplicates_arrive() -> None:
    """The behaviour direct delivery replaces: each receiver gets several copies (one per relay)."""

    async def main() -> None:
        async with cluster(NAMES) as (_, nodes):
            await wait_full_mesh(nodes)
            want = _publish_all(nodes, 10)
            assert await wait_until(lambda: all(n.payloads() >= want[n.name] for n in nodes), 45)
            await trio.sleep(1.0)
            copies = sum(n.host.counters.copies_in for n in nodes)
            assert all(n.host.counters.direct_published == 0 for n in nodes)
            assert all(len(n.received) == 30 for n in nodes)
            assert copies > 2 * 4 * 30, copies  # ~3 copies per delivery in a 4-host mesh
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


def test_a_message_meant_for_some_members_reaches_only_them_and_is_never_relayed() -> None:
    """``publish(..., to=...)`` on committee delivery: the votes' recorders get it, the other members nothing."""

    async def main() -> None:
        async with cluster(NAMES, allowed_peers=MEMBERS) as (_, nodes):
            await _connected_to_all(nodes)
            a, b, c, d = nodes
            for k in range(10):
                assert a.host.publish_nowait(b"t:%d" % k, to=[b.peer_id, c.peer_id])
            assert a.host.publish_nowait(b"everyone")
            assert await wait_until(lambda: all(n.payloads() == {b"t:%d" % k for k in range(10)} | {b"everyone"}
                                                for n in (b, c)) and d.payloads() == {b"everyone"}, 30)
            await trio.sleep(1.5)  # a heartbeat of IHAVE/IWANT gossip: d is not offered them either
            assert d.payloads() == {b"everyone"} and d.host.counters.copies_in == 1
            assert a.host.counters.targeted_published == 10 and a.host.counters.direct_published == 11
            assert a.host.router.targets == {}  # nothing left behind per message
            assert sum(n.host.counters.relayed_copies for n in nodes) == 0

    trio.run(main)


def test_a_malformed_recipient_is_refused_in_the_caller_and_the_host_goes_on() -> None:
    async def main() -> None:
        async with cluster(NAMES[:2], allowed_peers=MEMBERS[:2]) as (_, nodes):
            await _connected_to_all(nodes)
            a, b = nodes
            with pytest.raises(ValueError, match="not a libp2p peer id"):
                a.host.publish_nowait(b"bad", to=[b.peer_id, "not-a-peer-id"])
            assert a.host.publish_nowait(b"good", to=[b.peer_id])
            assert await wait_until(lambda: b.payloads() == {b"good"}, 15)

    trio.run(main)


def test_a_message_meant_for_some_members_takes_the_mesh_to_everyone_when_one_is_out_of_reach() -> None:
    """Without committee delivery there is no aiming: relays carry it to every member, as any message."""

    async def main() -> None:
        offline = peer_id_from_seed(seed_for("offline-member"))
        async with cluster(NAMES[:3], allowed_peers=[*MEMBERS[:3], offline]) as (_, nodes):
            await wait_full_mesh(nodes)
            a, b, c = nodes
            assert a.host.publish_nowait(b"aimed", to=[b.peer_id])
            assert await wait_until(lambda: b"aimed" in b.payloads() and b"aimed" in c.payloads(), 30)
            assert a.host.counters.targeted_published == 0 and a.host.router.targets == {}

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


# ---------------------------------------------------------------------------- patch 4 (read_rpcs_inline)


def _count_push_tasks(node) -> list[int]:
    """Wrap the host's pubsub manager so every task spawned for ``push_msg`` is counted."""
    calls = [0]
    manager = node.host.pubsub.manager
    original = manager.run_task

    def run_task(fn, *args, **kw):
        if getattr(fn, "__name__", "") == "push_msg":
            calls[0] += 1
        return original(fn, *args, **kw)

    manager.run_task = run_task
    return calls


@pytest.mark.parametrize("inline", [True, False])
def test_received_messages_are_handled_in_the_read_loop_not_one_task_each(inline: bool) -> None:
    """Patch 4 pinned: with it no task per message; without it (the library) one per copy. Same deliveries."""

    async def main() -> None:
        async with cluster(["ia", "ib"], inline_push=inline) as (_, nodes):
            a, b = nodes
            await wait_full_mesh(nodes)
            spawned = _count_push_tasks(b)
            for k in range(30):
                assert a.host.publish_nowait(b"i:%d" % k)
            assert await wait_until(lambda: len(b.received) == 30, 15)
            assert [p for _, p in b.received] == [b"i:%d" % k for k in range(30)]  # in order
            assert spawned[0] == (0 if inline else 30)
            assert b.host.counters.push_errors == 0

    trio.run(main)


def test_an_async_validator_still_gets_a_task_per_message() -> None:
    async def main() -> None:
        async with cluster(["ja", "jb"]) as (_, nodes):
            a, b = nodes
            await wait_full_mesh(nodes)

            async def slow_ok(forwarder, msg) -> bool:
                await trio.sleep(0)
                return True

            b.host.pubsub.set_topic_validator(b.host.config.topic, slow_ok, True)
            b.host.pubsub.set_topic_validator(b.host.config.direct_topic, slow_ok, True)
            spawned = _count_push_tasks(b)
            for k in range(5):
                assert a.host.publish_nowait(b"j:%d" % k)
            assert await wait_until(lambda: len(b.received) == 5, 15)
            assert spawned[0] == 5

    trio.run(main)


def test_a_failing_message_handler_does_not_end_the_read_loop(monkeypatch) -> None:
    async def main() -> None:
        async with cluster(["ka", "kb"]) as (_, nodes):
            a, b = nodes
            await wait_full_mesh(nodes)
            original = b.host.pubsub.notify_subscriptions

            def flaky(msg) -> None:
                if msg.data == b"k:boom":
                    raise RuntimeError("a bug in a handler")
                original(msg)

            monkeypatch.setattr(b.host.pubsub, "notify_subscriptions", flaky)
            for p in (b"k:1", b"k:boom", b"k:2"):
                assert a.host.publish_nowait(p)
            assert await wait_until(lambda: b.payloads() == {b"k:1", b"k:2"}, 15)
            assert b.host.counters.push_errors == 1

    trio.run(main)


def test_a_threaded_host_can_hand_deliveries_to_a_callback_on_its_trio_thread() -> None:
    import threading
    import time

    from node.p2p import ThreadedGossipHost

    got: list[tuple[str, bytes, str]] = []
    h1 = ThreadedGossipHost(GossipConfig(seed=seed_for("cb1"))).start()
    h2 = ThreadedGossipHost(GossipConfig(seed=seed_for("cb2"), bootstrap=[h1.listen_addrs[0]]),
                            on_deliver=lambda a, p: got.append((a, p, threading.current_thread().name))).start()
    try:
        deadline = time.monotonic() + 15
        while (not h1.mesh_peers() or not h2.mesh_peers()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for k in range(10):
            assert h1.publish(b"cb:%d" % k)
        deadline = time.monotonic() + 15
        while len(got) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(p for _, p, _ in got) == sorted(b"cb:%d" % k for k in range(10))
        assert {a for a, _, _ in got} == {h1.peer_id}
        assert {t for _, _, t in got} == {f"gossip-{h2.peer_id[-6:]}"}  # the host's Trio thread
        assert h2.deliveries.empty()
    finally:
        h2.close()
        h1.close()
