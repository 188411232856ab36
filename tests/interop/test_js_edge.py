"""Bad input from a js member, and a js outsider: what the Python edge drops, and how it counts it.

Each case names its vector in tests/vectors/edge.json: the counter the real Python edge increments for
that message from a Python sender (the vectors are made by running the edge). The js peer sends the same
kind of message over js-libp2p; every Python node must count it the same way, drop it (not forwarded, not
delivered) and log nothing. js-2 is a member: bad input is dropped, never blamed (nobody is banned).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import wait_for

VECTORS = {c["name"]: c for c in json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "edge.json").read_text())["cases"]}

# (vector, what the js peer sends): raw = the vector's bytes as they are; the rest are made fresh by the peer,
# since the edge judges timestamps against its own clock and the seen-cache remembers payloads.
CASES = [
    ("not_json", {"cmd": "raw"}),
    ("json_list", {"cmd": "raw"}),
    ("wrong_version", {"cmd": "raw"}),
    ("no_votes", {"cmd": "raw"}),
    ("too_deep", {"cmd": "raw"}),
    ("bad_tx_id", {"cmd": "raw"}),
    ("short_signature", {"cmd": "raw"}),
    ("missing_field", {"cmd": "raw"}),
    ("too_many_votes", {"cmd": "many", "count": 1025}),
    ("oversized", {"cmd": "pad", "bytes": 512 * 1024}),
    ("stale", {"cmd": "vote", "tx_id": "interop_stale", "value": 1, "offset_ms": -301_000}),
    ("future", {"cmd": "vote", "tx_id": "interop_future", "value": 1, "offset_ms": 31_000}),
]


def _counter(name: str) -> str:
    v = VECTORS[name]
    return v.get("host_counter") or next(iter(v["counters"]))


@pytest.mark.parametrize("vector,cmd", CASES, ids=[c[0] for c in CASES])
def test_bad_input_from_a_js_member_is_dropped_and_counted_like_a_python_senders(world, vector, cmd):
    js = world.peer("js-2")
    counter = _counter(vector)
    assert not VECTORS[vector]["accepted"]
    before = world.counters()
    if cmd["cmd"] == "raw":
        cmd = {**cmd, "hex": VECTORS[vector]["payload_hex"]}
    r = js.call(**cmd)
    assert len(r.get("recipients", [])) == 3, r  # sent to every trustee (flood publish)
    wait_for(lambda: all(a.get(counter, 0) == b.get(counter, 0) + 1 for a, b in zip(world.counters(), before,
                                                                                    strict=True)),
             15, f"{counter} at every node")
    after = world.counters()
    drops = ("dropped_garbage", "dropped_stale", "dropped_outsider", "dropped_banned", "invalid_signature",
             "gossip_rejected_oversize", "gossip_validated")
    for a, b in zip(after, before, strict=True):  # that counter only, once; nothing delivered
        assert {k: a.get(k, 0) - b.get(k, 0) for k in drops if a.get(k, 0) != b.get(k, 0)} == {counter: 1}
    # nothing of it in the log: no vote, no blame (only silence on consensus transactions it never voted on)
    assert not [r for r in world.rows() if r.payload.get("node_id") == "js-2" and (
        r.event_type in ("VoteAccepted", "NodeBanned") or r.payload.get("kind", "SILENT_FAILURE") != "SILENT_FAILURE")]


def test_an_outsider_js_peer_is_refused_at_the_connection_and_nothing_it_sends_is_logged(world):
    before = world.counters()
    rows_before = len(world.rows())
    outsider = world.peer("js-4", dial_timeout=4)
    assert outsider.ready["connected"] == [], outsider.ready  # every trustee closed it after the handshake
    assert len(outsider.ready["refusals"]) == 3, outsider.ready
    wait_for(lambda: all(a.get("gossip_refused_outsider_conns", 0) > b.get("gossip_refused_outsider_conns", 0)
                         for a, b in zip(world.counters(), before, strict=True)), 10, "refusals counted")
    r = outsider.call(cmd="vote", tx_id="interop_outsider", value=1)
    assert "error" in r and not r.get("recipients"), r  # nobody to send it to
    pid = world.peer_id("js-4")
    for a, b in zip(world.counters(), before, strict=True):
        assert a.get("dropped_outsider", 0) == b.get("dropped_outsider", 0)  # its messages never reached an edge
    assert not [r for r in world.rows()[rows_before:] if pid in json.dumps(r.payload) or "js-4" in json.dumps(r.payload)
                or r.payload.get("tx_id") == "interop_outsider"]


def test_a_js_member_cannot_frame_another_member_with_a_forged_envelope(world):
    """R7 blames the author whose envelope signature the router verified: an envelope that names trustee-1 as its
    author but is signed with js-2's key never reaches the edge, so nobody is blamed for what it carries."""
    js = world.peer("js-2")
    t1 = world.cluster.trustees[0]
    forged_vote = {"node_id": "trustee-2", "signature": "ab" * 64, "timestamp_ms": int(time.time() * 1000),
                   "tx_id": "interop_framed", "value": 4}  # were it delivered: a forgery "by trustee-1" (R7)
    payload = json.dumps({"v": 1, "votes": [forged_vote]}, sort_keys=True, separators=(",", ":")).encode()
    watched = ("invalid_signature", "dropped_garbage", "dropped_stale", "gossip_validated", "gossip_rejected_invalid")
    before = world.counters()
    r = js.call(cmd="rpc", hex=payload.hex(), **{"from": t1.peer_id})  # signed by js-2, claiming trustee-1
    assert len(r["recipients"]) == 3, r
    unsigned = js.call(cmd="rpc", hex=payload.replace(b"interop_framed", b"interop_unsigned").hex(), sign=False)
    assert len(unsigned["recipients"]) == 3
    # a control through the same hand-made path, honestly signed: it reaches the edge (as garbage)
    control = js.call(cmd="rpc", hex=f"control {time.time_ns()}".encode().hex())
    assert len(control["recipients"]) == 3
    wait_for(lambda: all(a.get("dropped_garbage", 0) == b.get("dropped_garbage", 0) + 1
                         for a, b in zip(world.counters(), before, strict=True)), 15, "the control at the edge")
    time.sleep(0.5)
    for a, b in zip(world.counters(), before, strict=True):
        # the framed and the unsigned messages moved no counter: the router dropped them before the edge
        moved = {k: a.get(k, 0) - b.get(k, 0) for k in watched if a.get(k, 0) != b.get(k, 0)}
        assert moved == {"dropped_garbage": 1, "gossip_rejected_invalid": 1}, moved  # the control alone
    assert not [x for x in world.rows() if x.payload.get("tx_id") in ("interop_framed", "interop_unsigned")]
    assert not [x for x in world.rows("NodeBanned") if x.payload["node_id"] in ("trustee-1", "js-2")]
    assert {t.peer_id for t in world.cluster.trustees} <= set(js.call(cmd="status")["connected"])
