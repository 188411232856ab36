"""A gossip node as its own OS process, driven through the synchronous ThreadedGossipHost.

Usage: python p2p_proc_node.py NAME KEYFILE N_PEERS PUBLISH_COUNT EXPECT [BOOTSTRAP...]

Prints ``ADDR <multiaddr>`` once listening, waits for a line on stdin (the "go" signal),
waits until N_PEERS peers are in its mesh, publishes PUBLISH_COUNT payloads, waits until
it has received EXPECT payloads from others (or 40 s), prints one JSON line with what it
saw, then closes gracefully.
"""

from __future__ import annotations

import json
import sys
import time

from node.p2p import GossipConfig, ThreadedGossipHost


def main(argv: list[str]) -> int:
    name, key_file = argv[0], argv[1]
    n_peers, n_pub, expect = int(argv[2]), int(argv[3]), int(argv[4])
    bootstrap = argv[5:]
    cfg = GossipConfig(key_file=key_file, bootstrap=bootstrap)
    with ThreadedGossipHost(cfg, validate=lambda author, payload: payload.startswith(b"proc:")) as node:
        print("ADDR", node.listen_addrs[0], flush=True)
        sys.stdin.readline()
        deadline = time.monotonic() + 20
        while len(node.mesh_peers()) < n_peers and time.monotonic() < deadline:
            time.sleep(0.1)
        for i in range(n_pub):
            assert node.publish(f"proc:{name}:{i}".encode())
        seen: set[bytes] = set()
        authors: set[str] = set()
        deadline = time.monotonic() + 40
        while len(seen) < expect and time.monotonic() < deadline:
            try:
                d = node.get(timeout=0.2)
            except Exception:
                continue
            seen.add(d.payload)
            authors.add(d.author)
        # keep serving a moment so slower peers get our last messages forwarded
        time.sleep(1.0)
        out = {
            "name": name,
            "peer_id": node.peer_id,
            "received": len(seen),
            "authors": sorted(authors),
            "counters": node.counters.snapshot(),
        }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
