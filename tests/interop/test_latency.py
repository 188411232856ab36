"""js -> Python gossip latency next to Python -> Python, at the same load, measured at one Python host.

A probe (the project's own ``ThreadedGossipHost``, py-libp2p 0.8.1, admitted as a member so the trustees
let it in) is connected to three senders, which send the same stream at the same time: ``RATE`` batches/s
of ``PER_BATCH`` fresh votes for ``SECONDS`` s each.

- js-1: js-libp2p (``peer.mjs flood``): signs and publishes at once (and meanwhile lets what it receives through
  unchecked, as py-sender does: its pure-JavaScript Ed25519 takes 2-5 ms a vote here, against libsodium's 0.06 ms,
  and would load the very process that sends);
- py-sender: py-libp2p (``py_sender.py``, its own process): signs and publishes at once, the same thing in Python;
- trustee-3: a trustee node through its API (``POST /votes``): the signer's journal (R14), the publisher
  thread and its batching window come before the gossip.

The probe decodes each batch, verifies each vote and records the delay from the vote's signing time
(``timestamp_ms``) to its arrival, per author, leaving out each stream's first second (warm-up). Printed, and
written to latency.json in the run's folder.
Set TVOTE_INTEROP_LOAD="rate,per_batch,seconds".
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nacl.signing
from helpers import wait_for

from devstack.operator import NAME as OPERATOR
from events import rules
from events.identity import peer_id_of
from node import wire
from node.p2p import GossipConfig, ThreadedGossipHost
from node.p2p.identity import generate_key_file, load_seed
from recording.recorder import now_ms

RATE, PER_BATCH, SECONDS = (float(x) for x in os.environ.get("TVOTE_INTEROP_LOAD", "10,4,6").split(","))


def pct(xs: list[int], q: float) -> int:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * q))]


def test_js_to_python_latency_next_to_python_to_python(world, capsys):
    keys = {m["node_id"]: bytes.fromhex(m["public_key"]) for m in json.loads(world.members_file.read_text())}
    seed = os.urandom(32)
    probe_key = bytes(nacl.signing.SigningKey(seed).verify_key)
    sender_key = world.base / "py-sender.key"
    generate_key_file(sender_key)
    keys["py-sender"] = bytes(nacl.signing.SigningKey(load_seed(sender_key)).verify_key)
    world.cluster.operate([rules.AdmitMember(n, k, peer_id_of(k), OPERATOR)
                           for n, k in (("probe", probe_key), ("py-sender", keys["py-sender"]))])
    seen: dict[str, list[int]] = collections.defaultdict(list)
    bad = collections.Counter()
    lock = threading.Lock()

    def validate(author: str, payload: bytes) -> bool:
        now = now_ms()
        for sv in wire.decode(payload):
            ok = sv.vote.node_id in keys and sv.verifies_under(keys[sv.vote.node_id])
            with lock:
                if not ok:
                    bad[sv.vote.node_id] += 1
                elif int(sv.vote.tx_id.split("-")[-2]) >= RATE:  # each stream's first second is a warm-up
                    seen[sv.vote.node_id].append(now - sv.vote.timestamp_ms)
        return True

    t3 = world.cluster.trustees[2]
    probe = ThreadedGossipHost(GossipConfig(seed=seed, bootstrap=[t3.status["listen_addrs"][0]], dht_discovery=False),
                               validate=validate).start()
    count = int(RATE * SECONDS)
    sender = None
    try:
        wait_for(lambda: t3.peer_id in probe.connected_peer_ids, 20, "probe connected to trustee-3")
        sender = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("py_sender.py")), str(sender_key), "py-sender", str(RATE),
             str(int(PER_BATCH)), str(count), probe.listen_addrs[0], *world.trustee_addrs()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(world.base / "py-sender.log", "ab"),  # noqa: SIM115
            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        js = world.peer("js-1")
        js.call(cmd="dial", addr=probe.listen_addrs[0])
        wait_for(lambda: world.peer_id("js-1") in probe.connected_peer_ids, 10, "js-1 connected to the probe")
        assert sender.stdout.readline().startswith("READY")
        time.sleep(2.5)  # GRAFTs on the next heartbeats
        results: list[int] = []

        def python_stream() -> None:
            with ThreadPoolExecutor(8) as pool:
                start = time.monotonic()
                futs = []
                for i in range(count):
                    time.sleep(max(0.0, start + i / RATE - time.monotonic()))
                    ballots = [(f"lat-py-{i}-{j}", 1) for j in range(int(PER_BATCH))]
                    futs.append(pool.submit(world.cluster.cast_many, 2, ballots))
                results.extend(f.result()[0] for f in futs)

        py = threading.Thread(target=python_stream)
        py.start()
        sender.stdin.write("go\n")
        sender.stdin.flush()
        flood = js.call(cmd="flood", count=count, rate=RATE, per_batch=int(PER_BATCH), prefix="lat-js", judge=False,
                        timeout=SECONDS * 4 + 30)
        py.join()
        assert json.loads(sender.stdout.readline())["sent"] == count
        assert flood["sent"] == count and flood["errors"] == 0, flood
        assert results.count(202) == count, collections.Counter(results)
        want = (count - int(RATE)) * int(PER_BATCH)
        wait_for(lambda: all(len(seen[n]) >= want for n in ("js-1", "py-sender", "trustee-3")), 30,
                 "every vote at the probe")
    finally:
        if sender is not None:
            sender.kill()
            sender.wait()
        probe.close()
    assert not bad, bad
    report = {"load": {"batches_per_s": RATE, "votes_per_batch": PER_BATCH, "seconds": SECONDS, "votes_each": want,
                       "senders": 3}}
    for label, who in (("js_libp2p", "js-1"), ("py_libp2p", "py-sender"), ("trustee_api", "trustee-3")):
        xs = seen[who]
        report[label] = {"p50_ms": pct(xs, 0.5), "p99_ms": pct(xs, 0.99), "samples": len(xs)}
    (world.base / "latency.json").write_text(json.dumps(report, indent=1))
    with capsys.disabled():
        print(f"\ngossip latency to a Python host (signed -> edge), {RATE:g} batches/s x {PER_BATCH:g} votes from each "
              "of 3 senders at once: " + " | ".join(
                  f"{k} p50 {v['p50_ms']} ms p99 {v['p99_ms']} ms" for k, v in report.items() if k != "load"))
    assert report["js_libp2p"]["p99_ms"] < 10_000, report  # loose: a shared 2-core machine; the numbers are printed
