"""The protocol's test vectors (tests/vectors/*.json) and docs/protocol.md against the Python code.

Both ways: the files must be exactly what ``make_vectors.py`` produces from the code now (so the code cannot
change a byte of the protocol without the vectors changing), and each vector is checked here against the code
and against the formulas as docs/protocol.md writes them (so the document cannot drift from the code).
interop/js/vectors.mjs checks the same files against the JavaScript implementation (tests/interop).
"""

from __future__ import annotations

import json
import re
import struct
import sys
from dataclasses import replace
from pathlib import Path

import blake3
import nacl.signing
import pytest
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import signature_validator

from events import audit, vote
from events.envelope import Envelope, authored, vote_bytes
from events.errors import InvalidVote
from events.follow import Follower
from events.identity import peer_id_bytes, peer_id_of
from events.store import GENESIS, Recorded
from events.vote import SignedVote, Vote, certificate_bytes, certificate_hash
from events.writers import LOG_DOMAIN, verify_batch
from node import wire
from node.p2p.config import GossipConfig
from node.p2p.host import envelope_of, message_id
from node.p2p.identity import key_pair_from_seed
from node.service import NodeConfig

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
DOC = (ROOT / "docs" / "protocol.md").read_text()
sys.path.insert(0, str(VECTORS))
import make_vectors  # noqa: E402


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def field(b: bytes | str) -> bytes:
    """docs/protocol.md, Notation: u32be(len(x)) || x."""
    b = b.encode() if isinstance(b, str) else b
    return struct.pack(">I", len(b)) + b


KEYS = {k["name"]: k for k in load("keys.json")["keys"]}


def pub(name: str) -> bytes:
    return bytes.fromhex(KEYS[name]["public_key"])


def test_the_files_are_exactly_what_the_code_produces_now():
    produced = make_vectors.produce()
    on_disk = {p.name for p in VECTORS.glob("*.json")}
    assert on_disk == set(produced), "a vector file the generator no longer makes (or a new one not committed)"
    stale = [name for name, text in produced.items() if (VECTORS / name).read_text() != text]
    assert not stale, f"{stale}: regenerate with `PYTHONPATH=src python tests/vectors/make_vectors.py`, and update " \
                      "docs/protocol.md (and the topic's version) if the protocol changed"


def test_keys_and_peer_ids_as_libp2p_derives_them():
    for k in KEYS.values():
        seed = bytes.fromhex(k["seed"])
        assert bytes(nacl.signing.SigningKey(seed).verify_key).hex() == k["public_key"]
        key = bytes.fromhex(k["public_key"])
        assert peer_id_bytes(key) == bytes.fromhex("002408011220") + key == bytes.fromhex(k["peer_id_bytes"])
        assert peer_id_of(key) == k["peer_id"]
        libp2p_id = ID.from_pubkey(key_pair_from_seed(seed).public_key)  # what the gossip host will be
        assert libp2p_id.to_base58() == k["peer_id"] and libp2p_id.to_bytes().hex() == k["peer_id_bytes"]


def test_votes_sign_the_documented_bytes():
    v = load("votes.json")
    assert v["domain_tag"] == vote.DOMAIN_TAG.decode()
    for case in v["valid"]:
        j = case["vote"]
        by_doc = (field(vote.DOMAIN_TAG) + field(j["tx_id"]) + struct.pack(">Q", j["value"]) + field(j["node_id"])
                  + struct.pack(">Q", j["timestamp_ms"]))
        sv = SignedVote.from_json(j)
        assert sv.vote.signing_bytes() == by_doc == bytes.fromhex(case["signing_bytes"]), case["name"]
        assert sv.verifies_under(pub(case["signer"])), case["name"]
        assert vote_bytes(sv.to_json()).decode() == case["json"]
        assert nacl.signing.SigningKey(bytes.fromhex(KEYS[case["signer"]]["seed"])).sign(by_doc).signature.hex() == \
            j["signature"]  # Ed25519 is deterministic: any implementation makes the same signature
    a, b = (next(c for c in v["valid"] if c["name"] == n) for n in ("ambiguity_a", "ambiguity_b"))
    assert a["signing_bytes"] != b["signing_bytes"]
    for case in v["invalid_signatures"]:
        key = bytes.fromhex(case["verify_under_key"]) if "verify_under_key" in case else pub(case["verify_under"])
        assert not SignedVote.from_json(case["vote"]).verifies_under(key), case["name"]
    base = {"tx_id": "tx_001", "value": 1, "node_id": "trustee-1", "timestamp_ms": 1}
    for case in v["invalid_fields"]:
        with pytest.raises(InvalidVote) as e:
            Vote(**{**base, **case["fields"]})
        assert str(e.value) == case["reason"]


def test_batches_and_message_ids():
    w = load("wire.json")
    assert w["topic"] == GossipConfig().topic
    for b in w["batches"]:
        payload = b["payload"].encode()
        assert payload.hex() == b["payload_hex"]
        assert wire.encode(wire.decode(payload)) == payload
        assert wire.encode([SignedVote.from_json(x) for x in b["votes"]]) == payload
        # the id the gossip host really gives the message, whatever its author and seqno
        msg = rpc_pb2.Message(data=payload, from_id=b"anyone", seqno=b"\x01" * 8, topicIDs=[w["topic"]])
        assert message_id(msg).hex() == blake3.blake3(payload).hexdigest() == b["message_id"]


def test_edge_cases_are_named_in_the_document_with_their_counters():
    e = load("edge.json")
    cfg = NodeConfig("x", "k", "d", "e")
    assert (e["max_vote_age_ms"], e["max_vote_future_ms"]) == (cfg.max_vote_age_ms, cfg.max_vote_future_ms)
    assert GossipConfig().max_payload_bytes == wire.MAX_BYTES  # the host's oversize check is the batch limit
    counters = {k for c in e["cases"] for k in c["counters"]} | {c["host_counter"] for c in e["cases"]
                                                                  if "host_counter" in c}
    assert counters == {"dropped_garbage", "dropped_outsider", "dropped_banned", "dropped_stale", "invalid_signature",
                        "gossip_rejected_oversize"}
    for c in counters:
        assert f"`{c}`" in DOC, c
    forged = next(c for c in e["cases"] if c["name"] == "forged")
    kinds = [(ev["type"], ev.get("kind"), ev.get("node_id")) for ev in forged["decider"][0]["events"]]
    assert kinds[:2] == [("ViolationDetected", "INVALID_SIGNATURE", "trustee-4"), ("NodeBanned", None, "trustee-4")]
    # Was G1 (docs/protocol.md): the same forgery in non-canonical JSON is the forger's just the same (R7).
    spelled = next(c for c in e["cases"] if c["name"] == "forged_non_canonical")
    kinds = [(ev["type"], ev.get("kind"), ev.get("node_id")) for ev in spelled["decider"][0]["events"]]
    assert kinds[:2] == [("ViolationDetected", "INVALID_SIGNATURE", "trustee-4"), ("NodeBanned", None, "trustee-4")]


def test_certificate_as_documented():
    c = load("certificate.json")
    votes = [SignedVote.from_json(v) for v in c["votes"]]
    by_doc = field(vote.DOMAIN_TAG + b"/certificate") + b"".join(
        field(sv.vote.signing_bytes()) + field(sv.signature) for sv in sorted(votes, key=lambda s: s.vote.node_id))
    assert certificate_bytes(votes) == by_doc == bytes.fromhex(c["certificate_bytes"])
    assert certificate_hash(votes) == blake3.blake3(by_doc).hexdigest() == c["certificate_hash"]


def test_envelope_is_what_libp2p_signs_and_proves_the_author():
    v = load("envelope.json")
    env = Envelope.from_json(v["envelope"])
    f = v["fields"]
    # libp2p's own view of the same message: its signature check passes, and our envelope_of gives these bytes
    msg = rpc_pb2.Message(from_id=bytes.fromhex(f["from"]), data=bytes.fromhex(f["data"]),
                          seqno=bytes.fromhex(f["seqno"]), topicIDs=[f["topic"]], signature=env.signature)
    assert signature_validator(msg)
    assert envelope_of(msg) == (env.signed, env.signature)
    assert env.data().decode() == v["data"] and bytes.fromhex(f["from"]) == peer_id_bytes(pub("mallory"))
    forged = v["forged_vote"]
    assert not SignedVote.from_json(forged).verifies_under(pub("alice"))
    assert authored(env, pub("mallory"), peer_id_bytes(pub("mallory")), forged) is None
    for check in v["checks"]:
        got = authored(env, pub(check["author"]), peer_id_bytes(pub(check["author"])), check.get("other_vote", forged))
        assert got == check["verdict"]


def _recorded(r: dict) -> Recorded:
    return Recorded(r["position"], r["stream_id"], r["stream_version"], r["event_type"], r["schema_version"],
                    r["payload"], r["recorded_at_us"], r["idempotency_key"], r["writer"], bytes.fromhex(r["prev_hash"]),
                    bytes.fromhex(r["hash"]), r["command"], bytes.fromhex(r["signature"]) if r["signature"] else None,
                    r["signed_from"])


def _row_hash_by_doc(r: dict) -> bytes:
    canon = lambda x: json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()  # noqa: E731
    parts = [bytes.fromhex(r["prev_hash"]), struct.pack(">q", r["position"]), struct.pack(">i", r["stream_version"]),
             struct.pack(">H", r["schema_version"]), struct.pack(">q", r["recorded_at_us"]), field(r["stream_id"]),
             field(r["event_type"]), field(canon(r["payload"])), field(r["idempotency_key"]), field(r["writer"])]
    if r["command"] is not None:
        parts.append(field(canon(r["command"])))
    return blake3.blake3(b"".join(parts)).digest()


def test_log_rows_hash_and_appends_are_signed_as_documented():
    lg = load("log.json")
    prev = GENESIS.hex()
    for r in lg["rows"]:
        assert r["prev_hash"] == prev
        assert _row_hash_by_doc(r).hex() == r["hash"] == _recorded(r).content_hash().hex()
        prev = r["hash"]
    for b in lg["batches"]:
        signed = field(LOG_DOMAIN) + struct.pack(">q", b["first_position"]) + bytes.fromhex(b["last_hash"])
        assert signed.hex() == b["signed_bytes"]
        assert verify_batch(bytes.fromhex(b["public_key"]), b["first_position"], bytes.fromhex(b["last_hash"]),
                            bytes.fromhex(b["signature"]))
    assert any("\\u007f" in r["canonical_payload"] and "\\ud83d\\ude00" in r["canonical_payload"] for r in lg["rows"])

    class Store:
        def __init__(self, rows: list[Recorded]) -> None:
            self.rows = rows

        def read_all(self, after: int = 0, limit: int = 1000) -> list[Recorded]:
            return self.rows[after:after + limit]

    rows = [_recorded(r) for r in lg["rows"]]
    follower = Follower(trust_own=False)
    assert all(s.void is None for s in follower.feed(rows)) and not follower.anomalies
    report = audit.verify(Store(rows))
    assert report.ok and report.events == len(rows) and report.last_hash == rows[-1].hash.hex()
    # and a row edited after it was written is named
    edited = [*rows[:5], replace(rows[5], payload={**rows[5].payload, "tampered": 1}), *rows[6:]]
    assert [f.position for f in audit.verify(Store(edited)).integrity][:1] == [rows[5].position]


def _doc_constants() -> dict[str, str]:
    section = DOC.split("## Constants", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        m = re.match(r"\| ([^|]+?) \| `([^`]*)` \|", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_the_documents_constants_are_the_codes():
    from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX

    from events import envelope, writers

    g, n = GossipConfig(), NodeConfig("x", "k", "d", "e")
    code = {
        "topic": g.topic, "wire version": str(wire.WIRE_VERSION), "vote domain tag": vote.DOMAIN_TAG.decode(),
        "certificate tag": certificate_bytes([])[4:].decode(), "log batch tag": writers.LOG_DOMAIN.decode(),
        "pubsub signing prefix": envelope.SIGNING_PREFIX.decode(), "max votes per batch": str(wire.MAX_BATCH),
        "max batch bytes": str(wire.MAX_BYTES), "max JSON nesting": str(wire.MAX_DEPTH),
        "max vote age ms": str(n.max_vote_age_ms), "max vote future ms": str(n.max_vote_future_ms),
        "tx_id pattern": vote.TX_ID_RE.pattern, "node_id pattern": vote.NODE_ID_RE.pattern,
        "security protocol": str(NOISE), "muxer protocol": str(YAMUX), "pubsub protocol": str(PROTOCOL_ID_V11),
        "seen-cache ttl s": f"{g.seen_ttl:g}", "heartbeat s": str(g.heartbeat_interval),
        "mesh D / D_low / D_high": f"{g.degree}/{g.degree_low}/{g.degree_high}",
        "author rate limit msgs/s": f"{n.author_rate_limit[0]:g}", "max envelope bytes": str(envelope.MAX_ENVELOPE),
    }
    assert _doc_constants() == code
    assert GossipConfig().max_payload_bytes == wire.MAX_BYTES and n.author_rate_limit[1] == 400
    for name in make_vectors.FILES:
        assert f"`{name}`" in DOC, name
