"""The Python twin of ``peer.mjs``'s flood: a py-libp2p host (the project's ``ThreadedGossipHost``) that signs
votes and publishes them at once, in its own process, for ``test_latency``.

Usage: python py_sender.py KEY_FILE NODE_ID RATE PER_BATCH COUNT BOOTSTRAP...
Prints ``READY`` once it has peers in its mesh, waits for a line on stdin, sends, prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

import nacl.signing

from events.vote import Vote, sign
from node import wire
from node.p2p import GossipConfig, ThreadedGossipHost
from node.p2p.identity import load_seed
from recording.recorder import now_ms


def main(argv: list[str]) -> int:
    key_file, node_id = argv[0], argv[1]
    rate, per_batch, count = float(argv[2]), int(argv[3]), int(argv[4])
    key = nacl.signing.SigningKey(load_seed(key_file))
    cfg = GossipConfig(key_file=key_file, bootstrap=argv[5:], dht_discovery=False)
    with ThreadedGossipHost(cfg) as host:
        deadline = time.monotonic() + 20
        while len(host.mesh_peers()) < len(argv[5:]) and time.monotonic() < deadline:
            time.sleep(0.1)
        print("READY", json.dumps(sorted(host.mesh_peers())), flush=True)
        sys.stdin.readline()
        start = time.monotonic()
        for i in range(count):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            votes = [sign(Vote(f"lat-pyhost-{i}-{j}", 1, node_id, now_ms()), key) for j in range(per_batch)]
            assert host.publish(wire.encode(votes))
        time.sleep(1.0)  # let the last messages leave before closing
        print(json.dumps({"sent": count, "seconds": time.monotonic() - start}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
