"""The protocol's test vectors (docs/protocol.md), produced by the Python implementation itself.

    PYTHONPATH=src python tests/vectors/make_vectors.py           # write tests/vectors/*.json
    PYTHONPATH=src python tests/vectors/make_vectors.py --check   # exit 1 if a file differs from what the code makes

Deterministic: every key is SHA-256 of its name, every time is fixed. ``tests/unit/test_vectors.py`` checks
the files equal what this script produces now (so the code cannot drift from them) and checks each vector
against the code piece by piece; ``interop/js/vectors.mjs`` checks the same files against the independent
JavaScript implementation (so the document, the Python code and a second implementation agree).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import nacl.signing

from events import commands, rules
from events.envelope import build, vote_bytes
from events.errors import CommandRejected, InvalidVote
from events.identity import peer_id_bytes, peer_id_of
from events.model import ClusterConfigured, MemberAdmitted, NodeBanned
from events.store import GENESIS, Unit, canonical_json, chain_rows, plan
from events.vote import DOMAIN_TAG, SignedVote, Vote, certificate_bytes, certificate_hash, sign
from events.writers import RowSigner, batch_bytes, operator_writer
from node import wire
from node.p2p.config import DEFAULT_TOPIC
from node.service import NodeConfig

HERE = Path(__file__).resolve().parent
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: "now" at the receiving edge in edge.json
TS = NOW_MS - 1_000  # when the vectors' votes were signed
SEQNO = bytes.fromhex("0000000000000007")
U64_MAX = 2**64 - 1
L = 2**252 + 27742317777372353535851937790883648493  # the Ed25519 group order


def seed(name: str) -> bytes:
    return hashlib.sha256(b"threshold-vote test vector key: " + name.encode()).digest()


def key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed(name))


def pub(name: str) -> bytes:
    return bytes(key(name).verify_key)


# alice, bob, carol: trustees; mallory: a member who forges; eve: a banned member; oscar: never admitted
PEOPLE = {"alice": "trustee-1", "bob": "trustee-2", "carol": "trustee-3", "mallory": "trustee-4",
          "eve": "trustee-5", "oscar": "outsider-1"}


def signed(who: str, tx_id: str = "tx_001", value: int = 1, ts: int = TS, node_id: str | None = None) -> SignedVote:
    """A vote in ``node_id``'s name (default: who's own), signed with who's key."""
    v = Vote(tx_id, value, node_id or PEOPLE[who], ts)
    return SignedVote(v, sign(v, key(who)).signature)


def vote_vector(name: str, sv: SignedVote, signer: str, note: str = "") -> dict:
    return {"name": name, **({"note": note} if note else {}), "signer": signer, "vote": sv.to_json(),
            "signing_bytes": sv.vote.signing_bytes().hex(), "json": vote_bytes(sv.to_json()).decode()}


# --- keys.json --------------------------------------------------------------------------------------------


def keys() -> dict:
    return {
        "description": "Ed25519 keys (RFC 8032: the 32-byte seed is the private key) and the libp2p peer id each "
                       "derives (docs/protocol.md, 'Identities'). seed = SHA-256('threshold-vote test vector key: ' "
                       "+ name).",
        "keys": [{"name": n, "node_id": PEOPLE[n], "seed": seed(n).hex(), "public_key": pub(n).hex(),
                  "peer_id_bytes": peer_id_bytes(pub(n)).hex(), "peer_id": peer_id_of(pub(n))} for n in PEOPLE],
    }


# --- votes.json ---------------------------------------------------------------------------------------------


def _malleated(sv: SignedVote) -> bytes:
    s = int.from_bytes(sv.signature[32:], "little") + L
    return sv.signature[:32] + s.to_bytes(32, "little")


def _field_error(**fields) -> str:
    base = {"tx_id": "tx_001", "value": 1, "node_id": "trustee-1", "timestamp_ms": TS}
    try:
        Vote(**{**base, **fields})
    except InvalidVote as e:
        return str(e)
    raise AssertionError(f"{fields} is a valid vote")


def votes() -> dict:
    good = [
        vote_vector("basic", signed("alice"), "alice"),
        vote_vector("value_zero", signed("bob", value=0), "bob"),
        vote_vector("u64_max", signed("carol", "tx_max", U64_MAX, U64_MAX), "carol",
                    "value and timestamp_ms at 2^64-1: beyond a JSON double, so parse integers exactly"),
        vote_vector("longest_ids", signed("alice", "A" * 60 + "z" * 60 + "09_.:-ab", 42,
                                          node_id="N-" + "x" * 62), "alice",
                    "tx_id of 128 and node_id of 64 characters, every allowed character class"),
        vote_vector("ambiguity_a", signed("alice", "tx_1", 23), "alice",
                    "the seed's tx_id||value would sign 'tx_123' here and in ambiguity_b; R2's bytes differ"),
        vote_vector("ambiguity_b", signed("alice", "tx_12", 3), "alice"),
    ]
    sv = signed("alice")
    bad_sigs = [
        {"name": "signed_by_another_key", "vote": signed("mallory", node_id="trustee-1").to_json(),
         "verify_under": "alice", "reason": "the signature is mallory's, the vote claims trustee-1 (alice)"},
        {"name": "no_domain_tag", "vote": {**sv.to_json(), "signature": key("alice").sign(
            b"tx_001" + (1).to_bytes(8, "big")).signature.hex()}, "verify_under": "alice",
         "reason": "a signature over other bytes (the seed's tx_id||value) never verifies"},
        {"name": "malleated_s", "vote": {**sv.to_json(), "signature": _malleated(sv).hex()}, "verify_under": "alice",
         "reason": "S + L: the same point equation, a non-canonical scalar; strict verifiers refuse it"},
        {"name": "flipped_bit", "vote": {**sv.to_json(), "signature": (sv.signature[:10] + bytes([sv.signature[10] ^ 1])
                                                                      + sv.signature[11:]).hex()},
         "verify_under": "alice", "reason": "one bit of R changed"},
        {"name": "small_order_key", "vote": {**sv.to_json(), "signature": ("01" + "00" * 31) + "00" * 32},
         "verify_under_key": "01" + "00" * 31,
         "reason": "key and R the identity point, S = 0: a ZIP-215 verifier accepts this for any message, "
                   "libsodium and this protocol refuse small-order keys and R"},
    ]
    for b in bad_sigs:
        k = bytes.fromhex(b["verify_under_key"]) if "verify_under_key" in b else pub(b["verify_under"])
        assert not SignedVote.from_json(b["vote"]).verifies_under(k), b["name"]
    bad_fields = [
        {"name": n, "fields": f, "reason": _field_error(**f)} for n, f in [
            ("empty_tx_id", {"tx_id": ""}), ("space_in_tx_id", {"tx_id": "tx 1"}), ("tx_id_129", {"tx_id": "t" * 129}),
            ("non_ascii_tx_id", {"tx_id": "tx_é"}), ("node_id_65", {"node_id": "n" * 65}),
            ("value_2_64", {"value": 2**64}), ("negative_value", {"value": -1}), ("boolean_value", {"value": True}),
            ("string_value", {"value": "1"}), ("timestamp_2_64", {"timestamp_ms": 2**64}),
        ]
    ]
    return {
        "description": "Signed votes (R2). signing_bytes = field(domain tag) || field(tx_id) || u64be(value) || "
                       "field(node_id) || u64be(timestamp_ms), field(x) = u32be(len(x)) || x; the signature is "
                       "Ed25519 over signing_bytes; json is the vote as it travels (canonical JSON).",
        "domain_tag": DOMAIN_TAG.decode(),
        "valid": good,
        "invalid_signatures": bad_sigs,
        "invalid_fields": bad_fields,
    }


# --- wire.json ------------------------------------------------------------------------------------------------


def wire_vectors() -> dict:
    batch = [signed("alice"), signed("bob")]
    payload = wire.encode(batch)
    single = wire.encode([signed("carol", "tx_002", 5)])
    return {
        "description": "The gossip batch (docs/protocol.md, 'Messages'): canonical JSON {\"v\":1,\"votes\":[...]}, "
                       "UTF-8; the GossipSub message id is BLAKE3-256 of the payload alone.",
        "topic": DEFAULT_TOPIC,
        "batches": [
            {"name": n, "votes": [sv.to_json() for sv in wire.decode(p)], "payload": p.decode(),
             "payload_hex": p.hex(), "message_id": _msg_id(p)}
            for n, p in (("two_votes", payload), ("one_vote", single))
        ],
    }


def _msg_id(p: bytes) -> str:
    import blake3

    return blake3.blake3(p).hexdigest()


# --- edge.json ---------------------------------------------------------------------------------------------------


def edge_members() -> list[dict]:
    return [{"node_id": PEOPLE[n], "key": n, "banned": n == "eve"} for n in ("alice", "bob", "carol", "mallory", "eve")]


def edge_ledger() -> rules.Ledger:
    """The cluster the edge vectors are judged in: alice..eve admitted, t = 3, eve banned."""
    ledger = rules.Ledger()
    for m in edge_members():
        n = m["key"]
        ledger.apply(MemberAdmitted(PEOPLE[n], pub(n).hex(), peer_id_of(pub(n)), "vectors", 0))
    ledger.apply(ClusterConfigured(3, 30_000, 500, 100, "vectors", 0, 50, 0))
    ledger.apply(NodeBanned("trustee-5", peer_id_of(pub("eve")), "DOUBLE_VOTING", "vectors"))
    return ledger


def _raw(v: dict) -> bytes:
    return json.dumps({"v": 1, "votes": [v]}, separators=(",", ":"), sort_keys=True).encode()


def edge() -> dict:
    cfg = NodeConfig("x", "k", "d", "e")
    a = signed("alice").to_json()
    forged = signed("mallory", node_id="trustee-1")
    shouted = {**forged.to_json(), "signature": forged.signature.hex().upper()}
    noncanon = json.dumps({"v": 1, "votes": [shouted]}).encode()
    cases: list[dict] = [
        ("valid", "alice", wire.encode([signed("alice")]), "accepted and forwarded; no counter"),
        ("carries_others_votes", "bob", wire.encode([signed("alice"), signed("carol")]),
         "any member may carry any member's signed votes: each vote stands on its own signature"),
        ("oldest_accepted", "alice", wire.encode([signed("alice", ts=NOW_MS - cfg.max_vote_age_ms)]),
         "signed exactly max_vote_age_ms before now"),
        ("newest_accepted", "alice", wire.encode([signed("alice", ts=NOW_MS + cfg.max_vote_future_ms)]),
         "signed exactly max_vote_future_ms after now"),
        ("not_json", "alice", b"\x00\xff garbage", "not UTF-8 JSON"),
        ("empty", "alice", b"", "no bytes"),
        ("json_list", "alice", b"[]", "not an object"),
        ("wrong_version", "alice", _raw(a).replace(b'"v":1', b'"v":2'), "v is not 1"),
        ("no_votes", "alice", b'{"v":1,"votes":[]}', "a batch holds 1..1024 votes"),
        ("too_deep", "alice", b'{"v":1,"votes":[[[[[[[[1]]]]]]]]}', "nested deeper than 8"),
        ("bad_tx_id", "alice", _raw({**a, "tx_id": "bad id!"}), "one vote's tx_id is malformed: the batch is garbage"),
        ("value_2_64", "alice", _raw({**a, "value": 2**64}), "value out of range"),
        ("short_signature", "alice", _raw({**a, "signature": "00" * 63}), "signature of 63 bytes"),
        ("missing_field", "alice", _raw({k: v for k, v in a.items() if k != "timestamp_ms"}), "no timestamp_ms"),
        ("outsider_author", "oscar", wire.encode([signed("alice")]),
         "the author peer is not a member (R1): dropped, counted per vote, never logged"),
        ("outsider_voter", "alice", wire.encode([signed("oscar")]),
         "a vote in the name of a non-member (R1), even when signed by its key"),
        ("banned_author", "eve", wire.encode([signed("alice")]), "the author is banned (R10)"),
        ("stale", "alice", wire.encode([signed("alice", ts=NOW_MS - cfg.max_vote_age_ms - 1)]),
         "signed more than max_vote_age_ms before now: a replay, or a wild clock"),
        ("future", "alice", wire.encode([signed("alice", ts=NOW_MS + cfg.max_vote_future_ms + 1)]),
         "signed more than max_vote_future_ms after now"),
        ("one_stale_drops_the_batch", "alice",
         wire.encode([signed("bob"), signed("alice", ts=NOW_MS - cfg.max_vote_age_ms - 1)]),
         "a batch is accepted or dropped whole: bob's good vote is not delivered either"),
        ("forged", "mallory", wire.encode([forged]),
         "mallory's signature under trustee-1's name (R7): dropped and not forwarded, but handed to the decider "
         "with mallory's signed envelope, which bans mallory"),
        ("forged_stale", "mallory", wire.encode([signed("mallory", ts=NOW_MS - cfg.max_vote_age_ms - 1,
                                                        node_id="trustee-1")]),
         "the age check comes first: a stale forgery is only stale (nobody blamed)"),
        ("forged_non_canonical", "mallory", noncanon,
         "the same forgery sent as non-canonical JSON (spaces, upper-case hex): the evidence check decodes the "
         "signed batch and finds the vote in it, spelled otherwise, so mallory is banned just the same (was G1)"),
    ]
    out = []
    for name, author, payload, why in cases:
        out.append({"name": name, "author": author, "payload_hex": payload.hex(), "note": why,
                    **judge(author, payload)})
    out.append({"name": "too_many_votes", "author": "alice", "note": "1025 votes (the limit is 1024)",
                "recipe": {"repeat_vote": a, "count": wire.MAX_BATCH + 1},
                **judge("alice", wire.encode([signed("alice")] * (wire.MAX_BATCH + 1)))})
    big = b'{"v":1,"votes":[' + b" " * wire.MAX_BYTES + vote_bytes(a) + b"]}"
    out.append({"name": "oversized", "author": "alice",
                "note": "over 512 KiB: the gossip host refuses it before the node's validator sees it "
                        "(counter gossip_rejected_oversize); the validator alone would count dropped_garbage",
                "recipe": {"prefix": '{"v":1,"votes":[', "spaces": wire.MAX_BYTES, "then_vote": a, "suffix": "]}"},
                "host_counter": "gossip_rejected_oversize", **judge("alice", big)})
    return {
        "description": "What a trustee's edge (the GossipSub validator) does with each message, judged at now_ms "
                       "in a cluster of the listed members. accepted: delivered and forwarded. counters: the node's "
                       "/counters after the message. decider: the events a forged vote, handed on with its author's "
                       "envelope, makes (R7), or why it makes none.",
        "now_ms": NOW_MS, "max_vote_age_ms": cfg.max_vote_age_ms, "max_vote_future_ms": cfg.max_vote_future_ms,
        "seqno": SEQNO.hex(), "members": edge_members(), "cases": out,
    }


def judge(author: str, payload: bytes) -> dict:
    """What the real edge (TrusteeNode._check_at_edge) and decider do with ``payload`` from ``author``."""
    from unittest import mock

    from node.service import TrusteeNode

    class Edge(TrusteeNode):
        def __init__(self) -> None:  # no key file, no stores: the validator and its counters only
            from node.service import Counters

            self.cfg = NodeConfig("vectors", "k", "d", "e")
            self.counters = Counters()
            import collections
            import queue

            from observability.metrics import METRICS

            self.inbox = queue.Queue()
            self.reception = collections.deque()
            self._reception_seconds = METRICS.vote_reception.labels("vectors")
            self._parsed = {}  # accepted payload -> its votes, for the pump

    node = Edge()
    ledger = edge_ledger()
    node.recorder = type("R", (), {"ledger": ledger})()
    with mock.patch("node.service.now_ms", return_value=NOW_MS):
        ok = node._validate(peer_id_of(pub(author)), payload, lambda: _envelope_of(author, payload))
    out: dict = {"accepted": ok, "counters": node.counters.snapshot()}
    handed = []
    while not node.inbox.empty():
        peer, sv, env = node.inbox.get()
        try:
            events = ledger.decide(rules.ReceiveVote(sv, peer, NOW_MS, env))
            handed.append({"vote": sv.to_json(), "events": [
                {"type": e.TYPE, **({"kind": e.kind, "node_id": e.node_id} if e.TYPE == "ViolationDetected" else {}),
                 **({"node_id": e.node_id} if e.TYPE == "NodeBanned" else {})} for e in events]})
        except CommandRejected as e:
            handed.append({"vote": sv.to_json(), "rejected": type(e).__name__})
    if handed:
        out["decider"] = handed
    return out


def _envelope_of(author: str, payload: bytes) -> tuple[bytes, bytes]:
    env = build(key(author), payload, SEQNO, DEFAULT_TOPIC)
    return env.signed, env.signature


# --- certificate.json ------------------------------------------------------------------------------------------------


def certificate() -> dict:
    vs = [signed("carol", "tx_cert", 7), signed("alice", "tx_cert", 7), signed("bob", "tx_cert", 7)]
    return {
        "description": "The consensus certificate (ThresholdReached.certificate_hash, and the bytes32 recorded on "
                       "chain): field(domain tag + '/certificate') || for each deciding vote, sorted by node_id: "
                       "field(signing_bytes) || field(signature); hash = BLAKE3-256.",
        "votes": [sv.to_json() for sv in vs],
        "certificate_bytes": certificate_bytes(vs).hex(),
        "certificate_hash": certificate_hash(vs),
        "on_chain": {"function": "record(string txId, uint64 value, bytes32 certificateHash)", "tx_id": "tx_cert",
                     "value": 7, "certificate_hash": "0x" + certificate_hash(vs)},
    }


# --- envelope.json ----------------------------------------------------------------------------------------------------


def envelope() -> dict:
    from events.envelope import authored

    forged = signed("mallory", "tx_forge", 9, node_id="trustee-1")
    payload = wire.encode([forged])
    env = build(key("mallory"), payload, SEQNO, DEFAULT_TOPIC)
    fields = env.fields()
    other = signed("mallory", "tx_other", 9, node_id="trustee-1").to_json()

    def verdict(who: str, vote: dict) -> str | None:
        return authored(env, pub(who), peer_id_bytes(pub(who)), vote)

    checks = [
        {"author": "mallory", "verdict": verdict("mallory", forged.to_json())},
        {"author": "alice", "verdict": verdict("alice", forged.to_json())},
        {"author": "mallory", "other_vote": other, "verdict": verdict("mallory", other)},
    ]
    return {
        "description": "The author's signed pubsub envelope as R7 evidence: signed = protobuf Message{1 from, 2 data, "
                       "3 seqno, 4 topic} (length-delimited fields in this order), signature = Ed25519 over "
                       "'libp2p-pubsub:' || signed, by the author's key (its peer id derives from it).",
        "author": "mallory", "claimed_node": "trustee-1", "forged_vote": forged.to_json(),
        "data": payload.decode(), "seqno": SEQNO.hex(), "topic": DEFAULT_TOPIC,
        "fields": {"from": fields[1][0].hex(), "data": fields[2][0].hex(), "seqno": fields[3][0].hex(),
                   "topic": fields[4][0].decode()},
        "envelope": env.to_json(),
        "checks": checks,
    }


# --- log.json -------------------------------------------------------------------------------------------------------


class VectorLog:
    """A few appends through the real decider, unit building, planning and chaining, at fixed times."""

    def __init__(self) -> None:
        self.ledger = rules.Ledger()
        self.versions: dict[str, int] = {}
        self.rows: list = []
        self.keys: set[str] = set()
        self.batches: list[dict] = []

    def append(self, signer: RowSigner, cmds: list, now_us: int) -> None:
        from events.model import CLUSTER_STREAM, tx_stream

        units = []
        versions = dict(self.versions)
        for cmd in cmds:
            rules.authorize(self.ledger.cluster, signer.writer, cmd)
            events = self.ledger.step(cmd).events
            tx_id = getattr(cmd, "tx_id", None)
            expected = {s: versions.get(s, 0) for s in [CLUSTER_STREAM] + ([tx_stream(tx_id)] if tx_id else [])}
            for e in events:
                versions[e.stream] = versions.get(e.stream, 0) + 1
            units.append(Unit.of(expected, events, commands.to_json(cmd)))
        planned = plan(units, self.versions, self.keys)
        prev = self.rows[-1]["hash"] if self.rows else GENESIS.hex()
        rows, _ = chain_rows(planned, len(self.rows), bytes.fromhex(prev), now_us, signer)
        for r in rows:
            e = r.event
            self.rows.append({
                "position": r.position, "stream_id": e.stream_id, "stream_version": r.version,
                "event_type": e.event_type, "schema_version": e.schema_version, "payload": e.payload,
                "recorded_at_us": now_us, "idempotency_key": e.idempotency_key, "writer": signer.writer,
                "command": json.loads(e.command) if e.command else None, "prev_hash": r.prev_hash.hex(),
                "hash": r.hash.hex(), "signature": r.signature.hex() if r.signature else None,
                "signed_from": r.signed_from,
                "canonical_payload": canonical_json(e.payload).decode(),
            })
        last = rows[-1]
        self.batches.append({"writer": signer.writer, "public_key": signer.public_key.hex(),
                             "first_position": rows[0].position, "last_position": last.position,
                             "last_hash": last.hash.hex(), "signed_bytes": batch_bytes(rows[0].position,
                                                                                        last.hash).hex(),
                             "signature": last.signature.hex()})


def log() -> dict:
    op = RowSigner(operator_writer("vectors"), key("operator"))
    alice = RowSigner("trustee-1", key("alice"))
    lg = VectorLog()
    t0 = 1_767_225_600_000_000
    lg.append(op, [rules.AdmitWriter(op.writer, "operator", op.public_key, "vectors")], t0)
    lg.append(op, [*(rules.AdmitMember(PEOPLE[n], pub(n), peer_id_of(pub(n)), "vectors")
                     for n in ("alice", "bob", "carol")), rules.Configure(2, "vectors")], t0 + 1_000)
    votes = [signed(n, "tx_log", U64_MAX, TS) for n in ("alice", "bob")]
    lg.append(alice, [rules.ReceiveVote(sv, peer_id_of(pub("alice")), NOW_MS) for sv in votes], t0 + 2_000)
    lg.append(op, [rules.RemoveMember("trustee-3", "vectors", 'left: café ☕ \x7f "quoted" \\ / \U0001F600 \n')],
              t0 + 3_000)
    return {
        "description": "A log of four appends (docs/protocol.md, 'The log'): each row's hash = BLAKE3(prev_hash || "
                       "i64 position || i32 stream_version || u16 schema_version || i64 recorded_at_us || "
                       "field(stream_id) || field(event_type) || field(canonical payload) || field(idempotency_key) "
                       "|| field(writer) [|| field(canonical command)]); each append's last row carries its writer's "
                       "Ed25519 signature over field('threshold-vote/v1/log-batch') || i64 first_position || "
                       "last_hash. canonical_payload is given for convenience (it is canonical JSON of payload).",
        "operator_seed": seed("operator").hex(),
        "rows": lg.rows,
        "batches": lg.batches,
    }


FILES = {"keys.json": keys, "votes.json": votes, "wire.json": wire_vectors, "edge.json": edge,
         "certificate.json": certificate, "envelope.json": envelope, "log.json": log}


def render(obj: dict) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=True) + "\n"


def produce() -> dict[str, str]:
    return {name: render(fn()) for name, fn in FILES.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in produce().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"vectors differ from what the code produces now: {', '.join(stale)} "
              f"(regenerate with `PYTHONPATH=src python {Path(__file__).relative_to(HERE.parents[1])}` "
              "and update docs/protocol.md if the protocol changed)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
