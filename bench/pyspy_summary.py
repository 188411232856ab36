"""Summarise a py-spy raw record (collapsed stacks) of a trustee node: where its CPU goes, by stage.

``bench/chaos_bench.py --profile-dir DIR`` writes one record per load point (the first trustee,
sampled at 100 Hz without pausing it, only samples holding the GIL: Python CPU, not waits). This
prints the share of samples per stage (each sample goes to the stage of its innermost frame that
names one), then the top functions by self and by inclusive samples.

Run: ``.venv/bin/python bench/pyspy_summary.py DIR/n10_r10_this_0.txt [--top 25]``
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

# (stage, pattern on one frame "func (file:line)"), innermost match wins; order breaks ties in one frame.
STAGES: list[tuple[str, str]] = [
    ("verify (Ed25519, votes)", r"verifies_under|verify_all|nacl/signing"),
    ("edge parse (wire.decode)", r"node/wire\.py"),
    ("pubsub envelope signature", r"signature_validator|pubsub/validators\.py"),
    ("node validator (other)", r"_check_at_edge|_topic_validator"),
    ("decide (rules)", r"events/rules\.py"),
    ("etcd", r"etcd_guard|etcd3|grpc"),
    ("postgres", r"postgres_store|psycopg"),
    ("follow the log", r"catch_up|events/follow\.py"),
    ("recorder (other)", r"recording/recorder\.py"),
    ("API (http)", r"node/api\.py|http/server|socketserver"),
    ("signer/journal", r"node/signer"),
    ("noise (encrypt/decrypt)", r"security/noise|secure_session|cryptography"),
    ("yamux", r"stream_muxer/yamux"),
    ("peer record (envelope)", r"peer/envelope|peer_record|maybe_consume_signed_record|env_to_send"),
    ("scoring", r"pubsub/score\.py"),
    ("rpc queue / write", r"pubsub/rpc_queue\.py|write_msg|_handle_outbound"),
    ("router forward (gossipsub.publish)", r"GossipSub\.publish|_get_peers_to_send|send_rpc"),
    ("heartbeat / gossip control", r"heartbeat|emit_ihave|emit_iwant|handle_ihave|handle_iwant|mesh_heartbeat"),
    ("router control (other)", r"pubsub/gossipsub\.py"),
    ("pubsub push_msg (seen, validate)", r"push_msg|validate_msg|_is_msg_seen|_mark_msg_seen|seen\.py"),
    ("pubsub read loop / protobuf", r"continuously_read_stream|pubsub/pubsub\.py"),
    ("task spawning (anyio_service)", r"anyio_service"),
    ("our gossip host (other)", r"node/p2p/"),
    ("kad-dht", r"kad_dht"),
    ("trio scheduler / IO", r"trio/"),
    ("node worker (other)", r"node/service\.py"),
]
_COMPILED = [(name, re.compile(p)) for name, p in STAGES]
_LINE = re.compile(r"^(.*) (\d+)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        m = _LINE.match(line)
        if m:
            out.append((m.group(1).split(";"), int(m.group(2))))
    return out


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, rx in _COMPILED:
            if rx.search(frame):
                return name
    return "other"


def func(frame: str) -> str:
    return re.sub(r":\d+\)$", ")", frame)  # aggregate lines of one function


def summarise(path: Path, top: int = 25) -> str:
    stacks = parse(path)
    total = sum(n for _, n in stacks) or 1
    stages: collections.Counter[str] = collections.Counter()
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        stages[stage_of(frames)] += n
        self_t[func(frames[-1])] += n
        for f in {func(f) for f in frames}:
            incl[f] += n
    lines = [f"{path.name}: {total} samples (100 Hz => {total / 100:.1f} CPU s of the sampled node)", "",
             "stage | % of samples", "---|---"]
    lines += [f"{k} | {100 * v / total:.1f}" for k, v in stages.most_common()]
    lines += ["", f"top {top} self", "---"]
    lines += [f"{100 * v / total:5.1f}%  {k}" for k, v in self_t.most_common(top)]
    lines += ["", f"top {top} inclusive", "---"]
    lines += [f"{100 * v / total:5.1f}%  {k}" for k, v in incl.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("record", type=Path, nargs="+")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    for p in args.record:
        print(summarise(p, args.top))
        print()


if __name__ == "__main__":
    main()
