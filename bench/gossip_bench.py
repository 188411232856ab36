"""Gossip transport benchmark: 4 real py-libp2p hosts as separate OS processes on 127.0.0.1.

Prints, for gossip messages carrying batches of 1, 16, 64 and 256 votes (~150 bytes each,
individually Ed25519-signed, verified one by one in the receivers' validator):

* saturation: gossip messages/s and votes/s reaching every receiver when one node
  publishes as fast as the paced send queue lets it, and receiver CPU ms per message;
* rated load: p50/p99 delivery latency (enqueue on the sender -> dequeued by the
  receiver's consumer thread) at a fixed message rate below saturation;
* drops (every counter of GossipCounters.drops, all hosts);
* a cProfile of one receiver's Trio thread (the whole receive path) per gossip message.

Usage::

    .venv/bin/python bench/gossip_bench.py                  # full run (~1-2 min)
    .venv/bin/python bench/gossip_bench.py --quick          # smaller counts
    .venv/bin/python bench/gossip_bench.py --no-verify      # transport only

Each host is its own process driven by the synchronous ``ThreadedGossipHost`` (the same
boundary the node uses). The machine's 2 cores are shared by all 4 processes, so absolute
rates are a lower bound; "CPU ms per message" is the per-node figure that carries over.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import queue
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

HEADER = struct.Struct(">dIII")  # send time, round, seq, n_votes
VOTE_MSG_LEN = 86  # + 64-byte signature = 150 bytes per vote
SRC = Path(__file__).resolve().parents[1] / "src"


def _seed(i: int) -> bytes:
    return hashlib.sha256(b"gossip-bench:%d" % i).digest()


# ------------------------------------------------------------------------------ node process


def node_main(index: int, bootstrap: list[str], n_peers: int, verify: bool, baseline: bool,
              direct: bool = False) -> None:
    """One host. Commands arrive as JSON lines on stdin, results leave as JSON on stdout.

    ``direct``: the hosts admit one another as members, so messages go by committee delivery (one copy from the
    origin to each member, relayed by nobody), as the node's do (``GossipConfig.direct_delivery``).
    """
    import trio
    from nacl.bindings import crypto_sign_open
    from nacl.signing import SigningKey

    from node.p2p import GossipConfig, ThreadedGossipHost

    sk = SigningKey(_seed(1000 + index))
    vk = bytes(sk.verify_key)
    # A pool of signed votes (distinct messages) reused across payloads: publishing cost
    # stays out of the picture; every payload is still unique through its header.
    pool = [sk.sign(os.urandom(VOTE_MSG_LEN)) for _ in range(256)]
    pool_bytes = [bytes(v) for v in pool]
    keys: dict[str, bytes] = {}

    def validate(author: str, payload: bytes) -> bool:
        if len(payload) < HEADER.size + 32:
            return False
        _, _, _, n = HEADER.unpack_from(payload)
        key = payload[HEADER.size : HEADER.size + 32]
        body = payload[HEADER.size + 32 :]
        if len(body) != n * (VOTE_MSG_LEN + 64):
            return False
        if verify:
            step = VOTE_MSG_LEN + 64
            for off in range(0, len(body), step):
                try:
                    crypto_sign_open(body[off : off + step], key)
                except Exception:
                    return False
        keys.setdefault(author, key)
        return True

    cfg = GossipConfig(seed=_seed(index), bootstrap=bootstrap)
    if direct:
        from libp2p.peer.id import ID

        from node.p2p.identity import key_pair_from_seed

        cfg.allowed_peers = [ID.from_pubkey(key_pair_from_seed(_seed(i)).public_key).to_base58()
                             for i in range(n_peers + 1)]
    if baseline:  # py-libp2p's own behaviour: window update per read, records re-verified per RPC
        cfg.yamux_release_on_read = True
        cfg.memoize_peer_records = False
        os.environ["PY_YAMUX_RELEASE_ON_READ"] = "1"
    host = ThreadedGossipHost(cfg, validate=validate).start()
    print(json.dumps({"addr": host.listen_addrs[0], "peer_id": host.peer_id}), flush=True)
    deadline = time.monotonic() + 30
    while len(host.mesh_peers()) < n_peers and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps({"mesh": len(host.mesh_peers())}), flush=True)

    token = host._token  # the Trio thread's token, to switch the profiler on in that thread
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "publish":
            batch, count, rate, rnd = cmd["batch"], cmd["count"], cmd["rate"], cmd["round"]
            votes = b"".join(pool_bytes[i % 256] for i in range(batch))
            t0 = time.monotonic()
            cpu0 = time.process_time()
            published0 = host.counters.published
            for seq in range(count):
                if rate:
                    wait = t0 + seq / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                payload = HEADER.pack(time.time(), rnd, seq, batch) + vk + votes
                if not host.publish(payload, timeout=30):
                    break
            end = time.monotonic() + 120
            while host.counters.published < published0 + count and time.monotonic() < end:
                time.sleep(0.01)  # until the paced publisher has handed everything to GossipSub
            print(json.dumps({"published": count, "secs": time.monotonic() - t0,
                              "cpu": time.process_time() - cpu0,
                              "counters": host.counters.snapshot()}), flush=True)
        elif cmd["cmd"] == "receive":
            count, rnd, timeout = cmd["count"], cmd["round"], cmd["timeout"]
            # thread_time: CPU of the Trio thread only (wall time on a shared 2-core box
            # would charge other processes' time slices to whatever function was running).
            prof = cProfile.Profile(time.thread_time) if cmd.get("profile") else None
            if prof is not None:
                trio.from_thread.run_sync(prof.enable, trio_token=token)
            lat: list[float] = []
            first = last = None
            cpu0 = time.process_time()
            end = time.monotonic() + timeout
            while len(lat) < count and time.monotonic() < end:
                try:
                    d = host.get(timeout=0.2)
                except queue.Empty:
                    continue
                now = time.time()
                sent, r, _, _ = HEADER.unpack_from(d.payload)
                if r != rnd:
                    continue
                lat.append(now - sent)
                first = first if first is not None else now
                last = now
            cpu = time.process_time() - cpu0
            prof_text = ""
            shares: list[tuple[str, float]] = []
            if prof is not None:
                trio.from_thread.run_sync(prof.disable, trio_token=token)
                if os.environ.get("GOSSIP_BENCH_PSTATS"):
                    prof.dump_stats(os.environ["GOSSIP_BENCH_PSTATS"])
                s = io.StringIO()
                st = pstats.Stats(prof, stream=s)
                shares = breakdown(st)
                st.sort_stats("tottime").print_stats(22)
                s.write("\n--- by cumulative time ---\n")
                st.sort_stats("cumulative").print_stats(30)
                prof_text = s.getvalue()
            print(json.dumps({"received": len(lat), "lat": lat, "first": first, "last": last, "cpu": cpu,
                              "counters": host.counters.snapshot(), "profile": prof_text,
                              "shares": shares}), flush=True)
    host.close()


# Where a receiver's Trio thread spends CPU, by component (cumulative times of the entry
# points; components overlap where one calls another, as noted).
COMPONENTS = [
    ("whole Trio thread (profiled CPU)", None),
    ("pubsub RPC reader (read, parse, dispatch)", ("pubsub/pubsub.py", "continuously_read_stream")),
    ("  yamux frame read + window updates", ("yamux/yamux.py", "read")),
    ("  noise decrypt (read_msg)", ("noise/io.py", "read_msg")),
    ("  signed peer record on every RPC (memoised)", ("pubsub/utils.py", "maybe_consume_signed_record")),
    ("  same, our cached wrapper", ("node/p2p/_patches.py", "cached_consume_signed_record")),
    ("push_msg: one per RPC copy received", ("pubsub/pubsub.py", "push_msg")),
    ("  envelope signature check (strict signing)", ("pubsub/validators.py", "signature_validator")),
    ("  validate_msg -> our validator", ("pubsub/pubsub.py", "validate_msg")),
    ("    per-vote Ed25519 verify (libsodium)", ("nacl/bindings/crypto_sign.py", "crypto_sign_open")),
    ("  router forward (mcache, peer selection, enqueue)", ("pubsub/gossipsub.py", "publish")),
    ("  delivery hand-off to the consumer thread", ("node/p2p/host.py", "_on_message")),
    ("outbound writer tasks (serialize, encrypt, send)", ("pubsub/pubsub.py", "handle_sending_messages")),
    ("yamux demux of incoming frames", ("yamux/yamux.py", "handle_incoming")),
    ("task spawning per RPC (anyio_service run_task)", ("anyio_service/trio_manager.py", "run_task")),
    ("GossipSub heartbeat", ("pubsub/gossipsub.py", "heartbeat")),
    ("Trio scheduler itself (tottime in trio/_core)", ("trio/_core/", "*")),
]


def breakdown(st: pstats.Stats) -> list[tuple[str, float]]:
    """Share of the profiled Trio-thread CPU per component (entry points' cumulative time).

    Shares, not absolute times: cProfile with a thread-CPU clock adds a clock syscall per
    call, inflating call-heavy code several-fold; the orchestrator scales the shares by
    the *unprofiled* CPU per message measured in the matching rated round.
    """
    stats = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values()) or 1e-9
    out = []
    for label, key in COMPONENTS:
        if key is None:
            t = total
        elif key[1] == "*":
            t = sum(v[2] for (f, _, _), v in stats.items() if key[0] in f)
        else:
            t = max((v[3] for (f, _, fn), v in stats.items() if key[0] in f and fn == key[1]), default=0.0)
        out.append((label, t / total))
    return out


# ------------------------------------------------------------------------------ orchestrator


DROP_KEYS = ("publish_rejected", "delivery_drops", "own_publish_drops", "forward_drops", "spam_limited")


class Proc:
    last: dict[str, int]

    def __init__(self, index: int, bootstrap: list[str], n_peers: int, verify: bool, baseline: bool,
                 direct: bool = False) -> None:
        self.last = {}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
        args = [sys.executable, __file__, "--node", str(index), "--peers", str(n_peers)]
        args += ["--no-verify"] if not verify else []
        args += ["--baseline"] if baseline else []
        args += ["--direct"] if direct else []
        args += [a for b in bootstrap for a in ("--bootstrap", b)]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env=env)
        hello = self.read()
        self.addr, self.peer_id = hello["addr"], hello["peer_id"]

    def send(self, **cmd: object) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()

    def read(self) -> dict:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("bench node died")
        return json.loads(line)

    def drops_delta(self, counters: dict[str, int]) -> dict[str, int]:
        """Per-round drop counts (counters are cumulative per host)."""
        d = {k: counters[k] - self.last.get(k, 0) for k in DROP_KEYS}
        self.last = counters
        return {k: v for k, v in d.items() if v}


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def run_round(procs: list[Proc], rnd: int, batch: int, count: int, rate: float | None,
              profile: bool = False) -> dict:
    pub, receivers = procs[0], procs[1:]
    timeout = 20 + count / (rate or 20)
    for i, r in enumerate(receivers):
        r.send(cmd="receive", count=count, round=rnd, timeout=timeout, profile=profile and i == 0)
    pub.send(cmd="publish", batch=batch, count=count, rate=rate, round=rnd)
    pres = pub.read()
    rres = [r.read() for r in receivers]
    drops: dict[str, int] = {}
    for proc, res in zip(procs, [pres, *rres], strict=True):
        for k, v in proc.drops_delta(res["counters"]).items():
            drops[k] = drops.get(k, 0) + v
    lat = [x for r in rres for x in r["lat"]]
    spans = [(r["last"] - r["first"]) for r in rres if r["first"] is not None and r["received"] > 1]
    recv = [r["received"] for r in rres]
    msgs_s = statistics.mean((r["received"] - 1) / s for r, s in zip(rres, spans, strict=False) if s > 0) \
        if spans else float("nan")
    return {
        "batch": batch, "count": count, "rate": rate, "received": recv,
        "msgs_s": msgs_s, "votes_s": msgs_s * batch,
        "p50_ms": pct(lat, 0.50) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
        "cpu_ms_per_msg": statistics.mean(r["cpu"] / max(1, r["received"]) for r in rres) * 1e3,
        "pub_cpu_ms_per_msg": pres["cpu"] / max(1, count) * 1e3,
        "drops": sum(drops.values()), "drop_kinds": drops,
        "profile": next((r["profile"] for r in rres if r["profile"]), ""),
        "shares": next((r["shares"] for r in rres if r["shares"]), []),
        "profiled_msgs": rres[0]["received"],
    }


def orchestrate(args: argparse.Namespace) -> None:
    n = 4
    t0 = time.monotonic()
    first = Proc(0, [], n - 1, args.verify, args.baseline, args.direct)
    procs = [first] + [Proc(i, [first.addr], n - 1, args.verify, args.baseline, args.direct) for i in range(1, n)]
    for p in procs:
        p.read()  # mesh ready
    print(f"4 hosts up, full mesh in {time.monotonic() - t0:.1f}s "
          f"(vote verification in validator: {'on' if args.verify else 'off'}; "
          f"{'BASELINE: yamux update per read, peer records re-verified' if args.baseline else 'tuned'})")
    batches = [1, 16, 64, 256]
    sat_count = 120 if args.quick else 300
    lat_count = 100 if args.quick else 200
    rnd = 0
    print("(CPU ms/msg = receiver process CPU per gossip message; pub CPU = publisher's)")
    print("\nSaturation (one publisher, 3 receivers; paced send queue, publish as fast as allowed)")
    print(f"{'batch':>5} {'msgs':>5} {'gossip msg/s':>12} {'votes/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU ms/msg':>10} {'pub CPU':>7} {'drops':>5}")
    sat = {}
    for b in batches:
        rnd += 1
        r = run_round(procs, rnd, b, sat_count, None)
        sat[b] = r
        print(f"{b:>5} {sat_count:>5} {r['msgs_s']:>12.1f} {r['votes_s']:>9.0f} {r['p50_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['cpu_ms_per_msg']:>10.2f} {r['pub_cpu_ms_per_msg']:>7.2f} "
              f"{r['drops']:>5}  recv={r['received']}"
              f"{'  ' + str(r['drop_kinds']) if r['drops'] else ''}")
    xs = [float(b) for b in batches]
    ys = [sat[b]["cpu_ms_per_msg"] for b in batches]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    fixed = my - slope * mx
    print(f"\nReceiver CPU per gossip message ~= {fixed:.2f} ms + {slope * 1e3:.0f} us x votes "
          f"-> one core: ~{1e3 / fixed:.0f} msgs/s at batch 1, ~{64e3 / (fixed + 64 * slope):.0f} votes/s "
          f"at batch 64, ~{256e3 / (fixed + 256 * slope):.0f} votes/s at batch 256 (ceiling {1e3 / slope:.0f}).")
    print(f"\nRated load: min({args.rate:.0f} msgs/s, {args.max_votes:.0f} votes/s) "
          "(latency = sender enqueue -> receiver consumer thread)")
    print(f"{'batch':>5} {'msgs':>5} {'msg/s':>6} {'votes/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/msg':>10} "
          f"{'drops':>5}")
    rated_cpu: dict[int, float] = {}
    for b in batches:
        rnd += 1
        rate = min(args.rate, args.max_votes / b)
        r = run_round(procs, rnd, b, lat_count, rate)
        rated_cpu[b] = r["cpu_ms_per_msg"]
        print(f"{b:>5} {lat_count:>5} {rate:>6.0f} {rate * b:>9.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['cpu_ms_per_msg']:>10.2f} {r['drops']:>5}  recv={r['received']}"
              f"{'  ' + str(r['drop_kinds']) if r['drops'] else ''}")
    rnd += 1
    prof_batch = 16
    r = run_round(procs, rnd, prof_batch, lat_count, args.rate, profile=True)
    print(f"\ncProfile (CPU time of one receiver's Trio thread), batch={prof_batch}, "
          f"{r['profiled_msgs']} gossip messages at {args.rate:.0f}/s "
          f"(divide by the message count for per-message cost)")
    unprof = rated_cpu[prof_batch]
    print(f"Receive-path CPU per gossip message by component: share of the profiled Trio-thread CPU x the "
          f"unprofiled {unprof:.2f} ms/msg of the rated round (each message arrives ~3x in a 4-host mesh; "
          "nested rows are part of the row above). cProfile adds a clock call per Python call, so it "
          "over-weights call-heavy Python (Trio, yamux) and under-weights C (libsodium); the linear fit above "
          "is the unbiased split between fixed and per-vote cost.")
    for label, share in r["shares"]:
        print(f"  {label:<52} {share * unprof:7.3f} ms  {100 * share:5.1f} %")
    print()
    print(r["profile"])
    for p in procs:
        p.send(cmd="quit")
    for p in procs:
        p.p.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--node", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--peers", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", action="append", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--no-verify", dest="verify", action="store_false", help="skip per-vote Ed25519 verify")
    ap.add_argument("--quick", action="store_true", help="smaller message counts")
    ap.add_argument("--baseline", action="store_true",
                    help="switch off our two library tunings (yamux window updates, peer-record memo)")
    ap.add_argument("--direct", action="store_true",
                    help="committee delivery: the hosts admit one another as members (one copy each, no relays)")
    ap.add_argument("--rate", type=float, default=40.0, help="max gossip messages/s in the latency rounds")
    ap.add_argument("--max-votes", type=float, default=2560.0, help="max votes/s in the latency rounds")
    args = ap.parse_args()
    if args.node is not None:
        sys.path.insert(0, str(SRC))
        node_main(args.node, args.bootstrap, args.peers, args.verify, args.baseline, args.direct)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
