"""Spike / reproducer: py-libp2p 0.8.1 AutoNAT + circuit relay v2 across a real NAT (issue 18, item 7).

Three bare py-libp2p hosts (Noise + yamux + GossipSub v1.1, no node code) on the namespace test
network: ``relay`` and ``pub`` on the bridge, ``priv`` behind the NAT router ``router`` (masquerade,
no inbound; devstack.nat). Checks, in order, and prints one JSON line per step:

1. ``pub`` cannot dial ``priv`` directly (no route / no inbound);
2. ``priv`` asks ``relay`` and ``pub`` for an AutoNAT dial-back -> PRIVATE; ``pub`` asks ``relay`` -> PUBLIC;
3. ``priv`` reserves a slot on ``relay`` (HOP);
4. ``pub`` dials ``<relay>/p2p-circuit/p2p/<priv>`` -> a relayed connection (Noise + yamux on top);
5. a stream round trip pub -> priv over it;
6. GossipSub messages both ways over it (priv holds no direct connection to pub).

    sudo PYTHONPATH=src .venv/bin/python bench/nat_spike.py          # orchestrates, prints results
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SEEDS = {"relay": b"r" * 32, "pub": b"p" * 32, "priv": b"q" * 32}
PORT = 4101
TOPIC = "nat-spike"
ECHO = "/nat-spike/echo/1.0.0"


def out(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


async def role(name: str, relay_ip: str, pub_ip: str, router_ip: str) -> None:
    import multiaddr
    import trio
    from libp2p import new_host
    from libp2p.host.autonat.autonat import AutoNATService, AutoNATStatus
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo
    from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_ID
    from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
    from libp2p.relay.circuit_v2.transport import CircuitV2Transport
    from libp2p.tools.anyio_service import background_trio_service

    from node.p2p.identity import key_pair_from_seed, peer_id_from_seed

    ids = {n: peer_id_from_seed(s) for n, s in SEEDS.items()}
    relay_ma = f"/ip4/{relay_ip}/tcp/{PORT}/p2p/{ids['relay']}"
    pub_ma = f"/ip4/{pub_ip}/tcp/{PORT}/p2p/{ids['pub']}"
    circuit = f"{relay_ma}/p2p-circuit/p2p/{ids['priv']}"
    my_ip = {"relay": relay_ip, "pub": pub_ip, "priv": "192.168.1.2"}[name]
    listen = multiaddr.Multiaddr(f"/ip4/{my_ip}/tcp/{PORT}")
    host = new_host(key_pair=key_pair_from_seed(SEEDS[name]), listen_addrs=[listen])
    is_relay = name == "relay"
    proto = CircuitV2Protocol(host, allow_hop=is_relay)
    roles = RelayRole.STOP | RelayRole.CLIENT | (RelayRole.HOP if is_relay else RelayRole(0))
    transport = CircuitV2Transport(host, proto, RelayConfig(roles=roles))
    stock = os.environ.get("SPIKE_AUTONAT") == "stock"

    class FreshDialAutoNAT(AutoNATService):
        """Dial-back on a *new* connection: 0.8.1's _try_dial uses host.connect, which returns the
        connection the requester itself opened, so every server answers OK to a NATed peer."""

        async def _try_dial(self, peer_id, addrs):  # type: ignore[no-untyped-def]
            swarm = host.get_network()
            for raw in addrs:
                maddr = multiaddr.Multiaddr(raw)
                try:
                    with trio.fail_after(5):
                        t = swarm.transport_manager.transport_for_dialing(maddr)
                        conn = await t.dial(maddr)
                        try:
                            await swarm.upgrader.upgrade_security(conn, True, peer_id)
                        finally:
                            await conn.close()
                    return bytes(raw)
                except BaseException as e:
                    out(role=name, step="autonat_dialback_failed", addr=str(maddr), error=repr(e)[:120])
            return None

    cls = AutoNATService if stock else FreshDialAutoNAT
    autonat = cls(host, serve=True, confirmations=1 if name == "pub" else 2)
    router = GossipSub(protocols=[PROTOCOL_ID_V11], degree=2, degree_low=1, degree_high=3, heartbeat_interval=1)
    pubsub = Pubsub(host, router)
    got: list[str] = []

    async def echo(stream):  # type: ignore[no-untyped-def]
        data = await stream.read(100)
        await stream.write(b"echo:" + data)
        await stream.close()

    host.set_stream_handler(ECHO, echo)

    async def connect(ma: str) -> None:
        await host.connect(PeerInfo(*_info(ma)))

    def _info(ma: str) -> tuple[ID, list[multiaddr.Multiaddr]]:
        m = multiaddr.Multiaddr(ma)
        return ID.from_base58(m.get_peer_id()), [m]

    async with host.run(listen_addrs=[listen]), background_trio_service(proto), \
            background_trio_service(pubsub), background_trio_service(router), trio.open_nursery() as nursery:
        await pubsub.wait_until_ready()
        sub = await pubsub.subscribe(TOPIC)

        async def reader() -> None:
            async for msg in sub:
                got.append(msg.data.decode())
                out(role=name, step="gossip_in", data=msg.data.decode(), from_=ID(msg.from_id).to_base58()[-6:])

        nursery.start_soon(reader)
        out(role=name, step="up", id=ids[name], addrs=[str(a) for a in host.get_addrs()])

        if name == "relay":
            await trio.sleep(60)
        elif name == "pub":
            await trio.sleep(1)
            # 1. direct dial to priv's private address: must fail.
            t0 = time.monotonic()
            try:
                with trio.fail_after(3):
                    await connect(f"/ip4/192.168.1.2/tcp/{PORT}/p2p/{ids['priv']}")
                out(role=name, step="direct_dial_priv", ok=True)
            except BaseException as e:
                out(role=name, step="direct_dial_priv", ok=False, error=repr(e)[:200],
                    s=round(time.monotonic() - t0, 2))
            try:
                with trio.fail_after(3):
                    await connect(f"/ip4/{router_ip}/tcp/{PORT}/p2p/{ids['priv']}")
                out(role=name, step="dial_router_addr", ok=True)
            except BaseException as e:
                out(role=name, step="dial_router_addr", ok=False, error=repr(e)[:200])
            await connect(relay_ma)
            st, _ = await autonat.query_server(ID.from_base58(ids["relay"]), addrs=[listen.to_bytes()])
            autonat.update_status()
            out(role=name, step="autonat", status=autonat.get_status(),
                public=autonat.get_status() == AutoNATStatus.PUBLIC,
                server_status=st)
            # 4. dial priv through the relay, retrying until priv has reserved.
            conn = None
            for _ in range(40):
                try:
                    with trio.fail_after(10):
                        conn = await transport.dial(multiaddr.Multiaddr(circuit))
                    break
                except BaseException as e:
                    out(role=name, step="circuit_dial_retry", error=repr(e)[:300])
                    await trio.sleep(0.5)
            conns = host.get_network().get_connections(ID.from_base58(ids["priv"]))
            out(role=name, step="circuit_dial", ok=conn is not None,
                connected=[str(p)[-6:] for p in host.get_connected_peers()],
                to_priv=[(type(c).__name__, str(c.get_connection_type()), [str(a) for a in c.get_transport_addresses()])
                         for c in conns])
            if conn is None:
                return
            # 5. stream round trip over the relayed connection.
            try:
                with trio.fail_after(10):
                    s = await host.new_stream(ID.from_base58(ids["priv"]), [ECHO])
                    await s.write(b"ping")
                    reply = await s.read(100)
                out(role=name, step="stream", ok=reply == b"echo:ping", reply=reply.decode(errors="replace"),
                    remote=str(s.muxed_conn.peer_id)[-6:])
            except BaseException as e:
                out(role=name, step="stream", ok=False, error=repr(e)[:300])
            await trio.sleep(3)  # mesh/subscriptions over the relayed conn
            out(role=name, step="topic_peers", peers=[str(p)[-6:] for p in pubsub.peer_topics.get(TOPIC, set())])
            for i in range(5):
                await pubsub.publish(TOPIC, f"from-pub-{i}".encode())
                await trio.sleep(0.2)
            await trio.sleep(5)
            out(role=name, step="done", got=got)
        else:  # priv
            await trio.sleep(4)  # pub tries to dial us directly first
            await connect(relay_ma)
            await connect(pub_ma)  # outbound through the NAT works
            observed = f"/ip4/{router_ip}/tcp/{PORT}"
            addrs = [a.to_bytes() for a in host.get_addrs()] + [multiaddr.Multiaddr(observed).to_bytes()]
            for server in ("relay", "pub"):
                t0 = time.monotonic()
                try:
                    st, _a = await autonat.query_server(ID.from_base58(ids[server]), addrs=addrs, timeout=20)
                    out(role=name, step="autonat_query", server=server, status=st, s=round(time.monotonic() - t0, 2))
                except BaseException as e:
                    out(role=name, step="autonat_query", server=server, error=repr(e)[:200])
            autonat.update_status()
            out(role=name, step="autonat", status=autonat.get_status(),
                private=autonat.get_status() == AutoNATStatus.PRIVATE)
            # drop the direct connection to pub: from here on pub can only reach us through the relay
            await host.disconnect(ID.from_base58(ids["pub"]))
            stream = await host.new_stream(ID.from_base58(ids["relay"]), [HOP_ID])
            ok = await transport.reserve(stream, ID.from_base58(ids["relay"]), nursery)
            out(role=name, step="reserve", ok=ok, expires=transport._reservations.get(ID.from_base58(ids["relay"])))
            for _ in range(40):
                if ID.from_base58(ids["pub"]) in host.get_connected_peers():
                    break
                await trio.sleep(0.5)
            out(role=name, step="connected", peers=[str(p)[-6:] for p in host.get_connected_peers()])
            await trio.sleep(4)
            for i in range(5):
                await pubsub.publish(TOPIC, f"from-priv-{i}".encode())
                await trio.sleep(0.2)
            await trio.sleep(6)
            out(role=name, step="done", got=got)
        nursery.cancel_scope.cancel()


def orchestrate() -> int:
    from devstack.nat import behind_nat
    from devstack.netns import TestNetwork

    py = sys.executable
    with TestNetwork(["relay", "pub", "router"]) as net:
        priv = behind_nat(net, "priv", "router")
        args = [net["relay"].ip, net["pub"].ip, net["router"].ip]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = {}
        for name in ("relay", "pub", "priv"):
            h = priv if name == "priv" else net[name]
            procs[name] = h.popen([py, __file__, name, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env=env)
        t0 = time.monotonic()
        for name in ("priv", "pub"):
            try:
                o, _ = procs[name].communicate(timeout=90)
            except subprocess.TimeoutExpired:
                procs[name].kill()
                o, _ = procs[name].communicate()
            print(f"--- {name} (rc={procs[name].returncode}, {time.monotonic() - t0:.1f}s)")
            print("\n".join(ln for ln in o.splitlines() if ln.startswith("{") or "Error" in ln or "error" in ln))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 1:
        sys.exit(orchestrate())
    import trio

    trio.run(role, *sys.argv[1:])
