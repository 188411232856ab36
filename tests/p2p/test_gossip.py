"""Gossip transport on real py-libp2p 0.8.1 hosts over 127.0.0.1 (TCP + Noise + yamux).

Most tests run 3-4 in-process Trio hosts (one ``trio.run`` per test); one test runs three
separate OS processes through the synchronous ``ThreadedGossipHost``. Host counts and
message counts are kept small: the machine has 2 cores shared with other test suites.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from p2p_cluster import cluster, seed_for, start_node, wait_full_mesh, wait_until

from node.p2p import (
    GossipConfig,
    KeyFileError,
    SeenCache,
    ThreadedGossipHost,
    generate_key_file,
    load_seed,
    peer_id_from_seed,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


# ---------------------------------------------------------------------------- unit


def test_key_file_refused_when_readable_by_others(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    pid = generate_key_file(key, seed=seed_for("k"))
    assert pid == peer_id_from_seed(seed_for("k"))
    assert (key.stat().st_mode & 0o777) == 0o600
    assert load_seed(key) == seed_for("k")
    for mode in (0o640, 0o604, 0o660):
        key.chmod(mode)
        with pytest.raises(KeyFileError, match="group/others"):
            load_seed(key)
        with pytest.raises(KeyFileError):
            GossipHostForTest.build(key_file=str(key))
    key.chmod(0o600)
    (tmp_path / "short.key").write_bytes(b"abc")
    (tmp_path / "short.key").chmod(0o600)
    with pytest.raises(KeyFileError):
        load_seed(tmp_path / "short.key")


class GossipHostForTest:
    @staticmethod
    def build(**cfg: object) -> ThreadedGossipHost:
        return ThreadedGossipHost(GossipConfig(**cfg))  # type: ignore[arg-type]


def test_seen_cache_lru_and_ttl() -> None:
    now = [0.0]
    c = SeenCache(max_entries=3, ttl=60.0, clock=lambda: now[0])
    assert c.add(b"a") and c.add(b"b") and c.add(b"c")
    assert not c.add(b"a")  # already seen
    c.add(b"d")  # evicts the oldest (a)
    assert not c.has(b"a") and c.has(b"d") and len(c) == 3
    now[0] = 61.0
    assert not c.has(b"b")  # expired
    assert c.add(b"b")  # seen again after expiry
    assert c.evicted_by_size == 1


# ---------------------------------------------------------------------------- in-process hosts


def test_every_host_receives_every_message() -> None:
    async def main() -> None:
        async with cluster(["a", "b", "c", "d"]) as (_, nodes):
            await wait_full_mesh(nodes)
            for i, n in enumerate(nodes):
                for k in range(25):
                    assert n.host.publish_nowait(f"m:{i}:{k}".encode())
            want = {
                n.name: {f"m:{i}:{k}".encode() for i, m in enumerate(nodes) if m is not n for k in range(25)}
                for n in nodes
            }
            assert await wait_until(lambda: all(n.payloads() >= want[n.name] for n in nodes), 30)
            for n in nodes:
                assert len(n.received) == 75  # exactly once each (seen-cache), own not delivered
                authors = {a for a, _ in n.received}
                assert authors == {m.peer_id for m in nodes if m is not n}
                for author, payload in n.received:  # author is the signed envelope's origin
                    origin = nodes[int(payload.split(b":")[1])]
                    assert author == origin.peer_id
                assert n.host.counters.drops == 0

    trio.run(main)


def test_burst_of_1000_is_paced_not_dropped() -> None:
    async def main() -> None:
        async with cluster(["b1", "b2", "b3"]) as (_, nodes):
            await wait_full_mesh(nodes)
            src = nodes[0]
            t0 = time.monotonic()
            for k in range(1000):  # one tight loop: no await between publishes
                assert src.host.publish_nowait(b"burst:%04d" % k)
            want = {b"burst:%04d" % k for k in range(1000)}
            assert await wait_until(lambda: all(n.payloads() == want for n in nodes[1:]), 50, 0.2), [
                len(n.received) for n in nodes
            ]
            elapsed = time.monotonic() - t0
            for n in nodes:
                assert n.host.counters.drops == 0, n.host.counters.snapshot()
            assert src.host.counters.published == 1000
            print(f"1000-message burst delivered to 2 peers in {elapsed:.1f}s; "
                  f"publisher back-pressure waits={src.host.counters.backpressure_waits}")

    trio.run(main)


def test_validator_rejects_and_rejected_message_is_not_forwarded() -> None:
    """Line topology a - b - c (no DHT dialling): c only hears what b forwards."""

    def b_validate(author: str, payload: bytes) -> bool:
        if payload.startswith(b"boom"):
            raise ValueError("validator bug must count as reject, not crash")
        return payload.startswith(b"ok:")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            b = await start_node(nursery, "vb", validate=b_validate, dht_discovery=False)
            a = await start_node(nursery, "va", bootstrap=[b.addr], dht_discovery=False)
            c = await start_node(nursery, "vc", bootstrap=[b.addr], dht_discovery=False)
            assert await wait_until(lambda: len(b.host.mesh_peers()) == 2 and len(a.host.mesh_peers()) == 1
                                    and len(c.host.mesh_peers()) == 1, 15)
            assert c.peer_id not in a.host.connected_peers()
            bad = [b"garbage\x00\xff", b"\x00" * 40, b"boom", b"not-a-vote"]
            good = [b"ok:%d" % i for i in range(5)]
            for p in bad + good:
                assert a.host.publish_nowait(p)
            assert await wait_until(lambda: c.payloads() == set(good), 15)
            await trio.sleep(1.5)  # let a heartbeat of IHAVE/IWANT gossip pass too
            assert c.payloads() == set(good)
            assert not set(bad) & set(c.validated)  # c never even saw the rejected ones
            assert b.payloads() == set(good)
            assert b.host.counters.rejected_invalid == 3
            assert b.host.counters.validator_errors == 1
            a.host.publish_nowait(good[0])  # same payload = same message id: not resent, counted
            assert await wait_until(lambda: a.host.counters.duplicate_payloads == 1, 5)
            for n in (a, b, c):
                await n.host.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_flood_of_invalid_messages_is_cut_off_by_peer_score() -> None:
    """P4 (invalid messages) drives the flooder below publish_threshold: after ~100 invalid
    messages its traffic is dropped before signature checks, honest traffic flows on."""

    def reject_junk(author: str, payload: bytes) -> bool:
        return not payload.startswith(b"junk")

    async def main() -> None:
        async with cluster(["fa", "fb", "fx"]) as (_, nodes):
            a, b, x = nodes
            for n in nodes:
                n.host._validate = reject_junk  # swap in the test validator (records nothing)
            await wait_full_mesh(nodes)
            for k in range(400):
                x.host.publish_nowait(b"junk:%04d" % k)
            for k in range(20):
                b.host.publish_nowait(b"good:%02d" % k)
            want = {b"good:%02d" % k for k in range(20)}
            assert await wait_until(lambda: a.payloads() >= want, 20)
            assert await wait_until(lambda: x.host.counters.published == 400, 20)
            await trio.sleep(1.0)
            rejected = a.host.counters.rejected_invalid
            assert 100 <= rejected < 150, rejected  # the score gate, not the validator, stops the rest
            assert not any(p.startswith(b"junk") for p in a.payloads())
            scorer = a.host.router.scorer
            assert scorer is not None  # x sits at the publish threshold (-1000), decaying 1 %/s
            assert scorer.topic_score(x.host.host.get_id(), a.host.config.topic) < -800

    trio.run(main)


def test_oversized_payload_rejected_at_edge() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            r = await start_node(nursery, "ov-r", max_payload_bytes=1000)
            s = await start_node(nursery, "ov-s", bootstrap=[r.addr])
            await wait_full_mesh([r, s])
            s.host.publish_nowait(b"x" * 2000)
            s.host.publish_nowait(b"small")
            assert await wait_until(lambda: r.payloads() == {b"small"}, 10)
            assert r.host.counters.rejected_oversize == 1
            for n in (r, s):
                await n.host.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_author_rate_limit_rejects_excess_before_node_validator() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            r = await start_node(nursery, "rl-r", author_rate_limit=(5.0, 5.0))
            s = await start_node(nursery, "rl-s", bootstrap=[r.addr])
            await wait_full_mesh([r, s])
            for k in range(60):
                s.host.publish_nowait(b"rl:%02d" % k)
            assert await wait_until(lambda: s.host.counters.published == 60, 10)
            await trio.sleep(0.5)
            c = r.host.counters
            assert c.rejected_rate > 0 and c.validated + c.rejected_rate == 60
            assert len(r.validated) == c.validated  # the node's validator never saw the excess
            for n in (r, s):
                await n.host.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_ban_disconnects_refuses_messages_and_reconnects() -> None:
    async def main() -> None:
        async with cluster(["ba", "bb", "bc", "bx"]) as (_, nodes):
            a, b, c, x = nodes
            honest = [a, b, c]
            await wait_full_mesh(nodes)
            x.host.publish_nowait(b"before-ban")
            assert await wait_until(lambda: all(b"before-ban" in n.payloads() for n in honest), 10)

            for n in honest:  # every honest node reaches the same verdict and bans x
                n.host.ban(x.peer_id)
            assert await wait_until(lambda: not x.host.connected_peers(), 10), x.host.connected_peers()
            for n in honest:
                assert x.peer_id not in n.host.connected_peers()
                assert x.peer_id not in n.host.mesh_peers()
                assert x.peer_id not in n.host.routing_table_peers()
                assert n.host.is_banned(x.peer_id)

            # x keeps trying (its discovery loop redials too): every connection is refused right
            # after the Noise handshake, so it never gets a muxer, a pubsub stream or a mesh slot
            for n in honest:
                await x.host.connect(n.addr)
            x.host.publish_nowait(b"after-ban")
            await trio.sleep(2.0)
            for n in honest:
                assert b"after-ban" not in n.payloads()
                assert await wait_until(lambda n=n: x.peer_id not in n.host.connected_peers(), 5)
                assert x.peer_id not in n.host.topic_peers()
                assert x.peer_id not in n.host.mesh_peers()
                assert x.peer_id not in n.host.routing_table_peers()
            assert sum(n.host.counters.banned_conns_closed for n in honest) >= 3

            # the honest nodes still gossip among themselves
            a.host.publish_nowait(b"honest-after-ban")
            assert await wait_until(lambda: all(b"honest-after-ban" in n.payloads() for n in (b, c)), 10)
            assert b"honest-after-ban" not in x.payloads()

    trio.run(main)


def test_a_ban_while_the_stream_closes_slowly_does_not_stop_the_banning_host(monkeypatch) -> None:
    """Patch 3 (node.p2p._patches): a ban's teardown awaits the peer's stream reset; the peer's entry
    may be gone when it resumes (our ban also disconnects it). 0.8.1's ``del`` then raised KeyError and
    ended the banning host's Trio thread. Here the reset is made slow, so that always happens."""
    from libp2p.network.stream.net_stream import NetStream

    reset = NetStream.reset

    async def slow_reset(self) -> None:
        await reset(self)
        await trio.sleep(1.0)

    monkeypatch.setattr(NetStream, "reset", slow_reset)
    a = ThreadedGossipHost(GossipConfig(seed=os.urandom(32), dht_discovery=False)).start()
    b = ThreadedGossipHost(GossipConfig(seed=os.urandom(32), bootstrap=[a.listen_addrs[0]],
                                        dht_discovery=False)).start()
    try:
        end = time.monotonic() + 20
        while b.peer_id not in a.connected_peer_ids and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(1.5)  # subscriptions exchanged: a holds a pubsub stream of b's
        a.ban(b.peer_id)
        time.sleep(2.5)
        assert a.alive, f"the banning host stopped: {a.error!r}"
        assert b.peer_id not in a.connected_peer_ids
    finally:
        b.close()
        a.close()


def test_ban_on_one_node_refuses_messages_relayed_by_others() -> None:
    async def main() -> None:
        async with cluster(["ra", "rb", "rx"]) as (_, nodes):
            a, b, x = nodes
            await wait_full_mesh(nodes)
            a.host.ban(x.peer_id)  # only a bans x; b still relays x's messages to a
            assert await wait_until(lambda: x.peer_id not in a.host.connected_peers(), 10)
            for k in range(5):
                x.host.publish_nowait(b"x-relayed:%d" % k)
            assert await wait_until(lambda: len(b.payloads()) >= 5, 10)
            await trio.sleep(1.5)
            assert not any(p.startswith(b"x-relayed") for p in a.payloads())

    trio.run(main)


def test_ban_restored_at_start_refuses_the_peer() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            x_seed_name = "sx"
            x_id = peer_id_from_seed(seed_for(x_seed_name))
            a = await start_node(nursery, "sa", banned=[x_id])
            x = await start_node(nursery, x_seed_name, bootstrap=[a.addr])
            await trio.sleep(2.0)
            x.host.publish_nowait(b"from-banned")
            await trio.sleep(1.0)
            assert a.host.is_banned(x_id)
            assert x_id not in a.host.mesh_peers() and x_id not in a.host.topic_peers()
            assert b"from-banned" not in a.payloads()
            assert a.host.counters.banned_conns_closed >= 1
            for n in (x, a):
                await n.host.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_late_joiner_finds_peers_via_dht_and_receives() -> None:
    async def main() -> None:
        async with cluster(["ja", "jb", "jc"]) as (nursery, nodes):
            a, b, c = nodes
            await wait_full_mesh(nodes)
            # d knows only b; it must find a and c through the DHT, nobody restarts
            t0 = time.monotonic()
            d = await start_node(nursery, "jd", bootstrap=[b.addr])
            try:
                want = {a.peer_id, b.peer_id, c.peer_id}
                assert await wait_until(lambda: set(d.host.connected_peers()) >= want, 30), (
                    d.host.connected_peers(), d.host.routing_table_peers())
                await wait_full_mesh([a, b, c, d], timeout=15)
                joined = time.monotonic() - t0
                for n in (a, b, c):
                    n.host.publish_nowait(f"to-d:{n.name}".encode())
                want_p = {f"to-d:{n.name}".encode() for n in (a, b, c)}
                assert await wait_until(lambda: d.payloads() >= want_p, 15)
                d.host.publish_nowait(b"from-d")
                assert await wait_until(lambda: all(b"from-d" in n.payloads() for n in (a, b, c)), 15)
                print(f"late joiner connected to all and in the mesh after {joined:.1f}s")
            finally:
                await d.host.close()

    trio.run(main)


def test_graceful_close_while_messages_arrive() -> None:
    async def main() -> None:
        async with cluster(["ga", "gb", "gc", "gd"]) as (_, nodes):
            a, b, c, d = nodes
            await wait_full_mesh(nodes)
            for k in range(300):
                a.host.publish_nowait(b"stream:%03d" % k)
            for k in range(40):  # d's own last words must be drained, not lost
                d.host.publish_nowait(b"d-last:%02d" % k)
            assert await wait_until(lambda: len(d.received) >= 30, 20)
            await d.host.close()  # while a's stream is still arriving at d
            assert d.host.counters.published == 40
            want = {b"stream:%03d" % k for k in range(300)} | {b"d-last:%02d" % k for k in range(40)}
            assert await wait_until(lambda: b.payloads() >= want and c.payloads() >= want, 30), (
                len(b.payloads()), len(c.payloads()))
            # the survivors keep working
            b.host.publish_nowait(b"after-close")
            assert await wait_until(lambda: all(b"after-close" in n.payloads() for n in (a, c)), 10)
            for n in (a, b, c):
                assert n.host.counters.drops == 0, n.host.counters.snapshot()
            assert d.host.publish_nowait(b"too-late") is False  # intake closed, counted
            assert d.host.counters.publish_rejected == 1

    trio.run(main)


# ---------------------------------------------------------------------------- threads & processes


def test_threaded_host_sync_api() -> None:
    h1 = ThreadedGossipHost(GossipConfig(seed=seed_for("t1"))).start()
    h2 = ThreadedGossipHost(GossipConfig(seed=seed_for("t2"), bootstrap=[h1.listen_addrs[0]])).start()
    try:
        deadline = time.monotonic() + 15
        while (not h1.mesh_peers() or not h2.mesh_peers()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for k in range(50):
            assert h1.publish(b"sync:%d" % k)
        got = {h2.get(timeout=10).payload for _ in range(50)}
        assert got == {b"sync:%d" % k for k in range(50)}
        h2.ban(h1.peer_id)
        deadline = time.monotonic() + 10
        while h1.peer_id in h2.connected_peers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert h1.peer_id not in h2.connected_peers()
    finally:
        h2.close()
        h1.close()
    assert not h1.publish(b"closed")


def test_separate_processes_gossip(tmp_path: Path) -> None:
    script = Path(__file__).with_name("p2p_proc_node.py")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2] / "src"), env.get("PYTHONPATH", "")])
    names = ["p1", "p2", "p3"]
    keys = {}
    for n in names:
        keys[n] = tmp_path / f"{n}.key"
        generate_key_file(keys[n])
    n_pub = 20
    procs: list[subprocess.Popen[str]] = []

    def spawn(name: str, bootstrap: list[str]) -> tuple[subprocess.Popen[str], str]:
        p = subprocess.Popen(
            [sys.executable, str(script), name, str(keys[name]), str(len(names) - 1), str(n_pub),
             str(n_pub * (len(names) - 1)), *bootstrap],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        procs.append(p)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("ADDR "), line
        return p, line.split()[1]

    try:
        _first, addr = spawn("p1", [])
        spawn("p2", [addr])
        spawn("p3", [addr])
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=50)
            assert p.returncode == 0
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    ids = {r["peer_id"] for r in results}
    for r in results:
        assert r["received"] == n_pub * (len(names) - 1), r
        assert set(r["authors"]) == ids - {r["peer_id"]}
        assert r["counters"]["drops"] == 0, r
