"""Helpers for gossip tests: in-process Trio hosts on 127.0.0.1 with recorded deliveries."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from node.p2p import GossipConfig, GossipHost


def seed_for(name: str) -> bytes:
    """Deterministic 32-byte seed per test node name."""
    return hashlib.sha256(b"tvote-p2p-test:" + name.encode()).digest()


@dataclass
class Node:
    """A started host plus what it delivered (author, payload) in order."""

    name: str
    host: GossipHost
    received: list[tuple[str, bytes]] = field(default_factory=list)
    validated: list[bytes] = field(default_factory=list)

    @property
    def peer_id(self) -> str:
        return self.host.peer_id

    @property
    def addr(self) -> str:
        return self.host.listen_addrs[0]

    def payloads(self) -> set[bytes]:
        return {p for _, p in self.received}


async def start_node(
    nursery: trio.Nursery,
    name: str,
    bootstrap: Sequence[str] = (),
    validate: Callable[[str, bytes], bool] | None = None,
    **cfg: object,
) -> Node:
    """Start one host in ``nursery``; ``validate`` defaults to accept-all (recorded)."""
    node_ref: list[Node] = []

    def _validate(author: str, payload: bytes) -> bool:
        node_ref[0].validated.append(payload)
        return True if validate is None else validate(author, payload)

    def _deliver(author: str, payload: bytes) -> None:
        node_ref[0].received.append((author, payload))

    config = GossipConfig(seed=seed_for(name), bootstrap=list(bootstrap), **cfg)  # type: ignore[arg-type]
    host = GossipHost(config, validate=_validate, on_deliver=_deliver)
    node = Node(name, host)
    node_ref.append(node)
    await nursery.start(host.serve)
    return node


async def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``pred`` until true or ``timeout``; returns the last value."""
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(step)
        return True
    return pred()


async def wait_full_mesh(nodes: Sequence[Node], timeout: float = 15.0) -> None:
    """Every node has every other node in its topic mesh (n <= D+1, so the mesh is full)."""
    n = len(nodes)

    def ok() -> bool:
        return all(len(x.host.mesh_peers()) >= n - 1 for x in nodes)

    assert await wait_until(ok, timeout), [x.host.mesh_peers() for x in nodes]


@asynccontextmanager
async def cluster(names: Sequence[str], **cfg: object) -> AsyncIterator[tuple[trio.Nursery, list[Node]]]:
    """Start hosts, the first being everyone's bootstrap peer; close them all on exit."""
    async with trio.open_nursery() as nursery:
        first = await start_node(nursery, names[0], **cfg)
        nodes = [first]
        for name in names[1:]:
            nodes.append(await start_node(nursery, name, bootstrap=[first.addr], **cfg))
        try:
            yield nursery, nodes
        finally:
            with trio.move_on_after(20):
                for x in nodes:
                    await x.host.close()
            nursery.cancel_scope.cancel()
