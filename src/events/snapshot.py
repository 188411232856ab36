"""A follower's state at a log position, as bytes: restart from it instead of folding the log from 0.

A month of log is hours of folding at ~20,000 events/s. A reader (node, submitter, projector) saves its
follower's state now and then, at a *settled* position (every row up to it applied or void, none
waiting), and on restart loads its latest one and folds only what came after. The bytes are canonical
JSON, compressed; they carry the position and the log's hash at that position, so a snapshot that does
not match the log it is loaded against is refused (``SnapshotMismatch``), and the shell signs them with
the reader's own key (a node trusts only a snapshot it made itself). ``replay`` and ``audit verify``
never use snapshots: they fold from position 0 (R12).

``tests/unit/test_snapshot.py``: a follower restored from a snapshot and fed the rest of the log ends in
exactly the state of one that folded everything.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import zlib
from collections import OrderedDict
from typing import Any

from events import rules
from events.bloom import Bloom
from events.errors import ThresholdVoteError
from events.follow import Follower
from events.model import EVENT_TYPES
from events.vocab import TxStatus, WriterRole

FORMAT = 2


class SnapshotMismatch(ThresholdVoteError):
    """A snapshot that is not this log's state at its position (another cluster, an edited log, bad bytes)."""


def encode(f: Follower, extra: dict[str, Any] | None = None) -> bytes:
    if f.waiting:
        raise ValueError("a snapshot is taken at a settled position (no rows waiting for their signature)")
    c = f.ledger.cluster
    doc = {
        "format": FORMAT,
        "position": f.position,
        "prev_hash": f.prev_hash.hex(),
        "versions": f.versions,
        "cluster": {
            "config": dataclasses.asdict(c.config) if c.config else None,
            "config_seq": c.config_seq,
            "retention_seq": c.retention_seq,
            "members": [{**dataclasses.asdict(m), "vote_key": m.vote_key.hex()} for m in c.members.values()],
            "writers": [{**dataclasses.asdict(w), "public_key": w.public_key.hex()} for w in c.writers.values()],
            "faults": [[p, x.writer, x.reason] for p, x in sorted(c.faults.items())],
        },
        "txs": [_tx(t) for t in f.ledger.txs.values()],
        "tainted": sorted(f.tainted),
        "broken": f.broken,
        "voided": f.voided,
        "void_positions": sorted(f.void_positions),
        "final": list(f._final),
        "evicted": base64.b64encode(zlib.compress(bytes(f.evicted._array), 6)).decode(),
        "evicted_count": f.evicted.count,
        "extra": extra or {},
    }
    return zlib.compress(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), 6)


def decode(blob: bytes, into: Follower) -> dict[str, Any]:
    """Load a snapshot into a fresh follower (its settings, e.g. ``retain_final`` and ``loader``, are kept);
    returns what the shell kept beside it (``extra``)."""
    try:
        doc = json.loads(zlib.decompress(blob))
        if doc.get("format") != FORMAT:
            raise SnapshotMismatch(f"snapshot format {doc.get('format')!r} is not {FORMAT}")
        c = doc["cluster"]
        cluster = rules.Cluster(
            config=rules.Config(**c["config"]) if c["config"] else None,
            config_seq=c["config_seq"],
            retention_seq=c["retention_seq"],
            members={m["node_id"]: rules.Member(**{**m, "vote_key": bytes.fromhex(m["vote_key"])})
                     for m in c["members"]},
            writers={w["writer"]: rules.Writer(**{**w, "role": WriterRole(w["role"]),
                                                  "public_key": bytes.fromhex(w["public_key"])}) for w in c["writers"]},
            faults={p: rules.Fault(w, r) for p, w, r in c["faults"]},
        )
        f = into
        f.ledger.cluster = cluster
        f.ledger.txs = {t["tx_id"]: _untx(t) for t in doc["txs"]}
        f.versions = dict(doc["versions"])
        f.position = f.read = int(doc["position"])
        f.prev_hash = bytes.fromhex(doc["prev_hash"])
        f.tainted, f.broken, f.voided = set(doc["tainted"]), bool(doc["broken"]), int(doc["voided"])
        f.void_positions = set(doc["void_positions"])
        f._final = OrderedDict((t, None) for t in doc["final"])
        f.evicted = Bloom()
        f.evicted._array = bytearray(zlib.decompress(base64.b64decode(doc["evicted"])))
        f.evicted.count = int(doc["evicted_count"])
        return dict(doc.get("extra") or {})
    except SnapshotMismatch:
        raise
    except (ValueError, KeyError, TypeError, zlib.error) as e:
        raise SnapshotMismatch(f"an unreadable snapshot: {type(e).__name__}: {e}"[:200]) from None


def _tx(t: rules.Tx) -> dict[str, Any]:
    return {
        "tx_id": t.tx_id, "status": str(t.status), "opened_at_ms": t.opened_at_ms, "deadline_at_ms": t.deadline_at_ms,
        "votes": [v.to_payload() for v in t.votes.values()], "flagged": sorted([k, n] for k, n in t.flagged),
        "value": t.value, "deadline_fired": t.deadline_fired, "lock_revision": t.lock_revision,
        "signed": list(t.signed), "nonce": list(t.nonce) if t.nonce else None, "failures": t.failures,
        "expected": sorted(t.expected),
    }


def _untx(d: dict[str, Any]) -> rules.Tx:
    vote_type = EVENT_TYPES["VoteAccepted"]
    votes = {v["node_id"]: vote_type.from_payload(v) for v in d["votes"]}
    return rules.Tx(d["tx_id"], TxStatus(d["status"]), d["opened_at_ms"], d["deadline_at_ms"], votes,  # type: ignore
                    frozenset((k, n) for k, n in d["flagged"]), d["value"], d["deadline_fired"], d["lock_revision"],
                    tuple(d["signed"]), tuple(d["nonce"]) if d["nonce"] else None, d["failures"],
                    frozenset(d["expected"]))
