"""The signer journal's interchange format (modelled on EIP-3076), encoded and checked without I/O.

A file is trusted for nothing: every entry is checked against *our* vote key and node id
before an import may touch the journal, so a file from another trustee, an edited file or a
file merged from two sources is refused as a whole. Numbers are decimal strings, as in
EIP-3076: a u64 does not survive a JSON reader that maps numbers to doubles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import nacl.exceptions
import nacl.signing

from events.errors import InvalidCommand, show
from events.vote import DOMAIN_TAG, SignedVote, Vote, check_node_id

from .core import parse_u64_text, u64_text
from .errors import InterchangeInvalid

INTERCHANGE_FORMAT = "threshold-vote-signer-interchange"
INTERCHANGE_VERSION = "1"
_METADATA_KEYS = {"interchange_format", "interchange_format_version", "domain_tag", "node_id", "vote_public_key"}
_ENTRY_KEYS = {"tx_id", "value", "timestamp_ms", "signature"}
_HEX_KEY = re.compile(r"[0-9a-f]{64}")
_HEX_SIG = re.compile(r"[0-9a-f]{128}")


def encode(node_id: str, vote_key: bytes, votes: Iterable[SignedVote]) -> bytes:
    """Deterministic bytes: entries sorted by tx_id, fixed key order, one layout (same journal, same file)."""
    doc = {
        "metadata": {
            "interchange_format": INTERCHANGE_FORMAT,
            "interchange_format_version": INTERCHANGE_VERSION,
            "domain_tag": DOMAIN_TAG.decode(),
            "node_id": node_id,
            "vote_public_key": vote_key.hex(),
        },
        "data": [
            {
                "tx_id": sv.vote.tx_id,
                "value": u64_text(sv.vote.value),
                "timestamp_ms": u64_text(sv.vote.timestamp_ms),
                "signature": sv.signature.hex(),
            }
            for sv in sorted(votes, key=lambda s: s.vote.tx_id)
        ],
    }
    return (json.dumps(doc, indent=1, ensure_ascii=True) + "\n").encode()


def decode(raw: bytes, vote_key: bytes, node_id: str) -> list[SignedVote]:
    """Every vote of a file for (vote_key, node_id), each verified, one per tx_id, sorted; else InterchangeInvalid."""
    try:
        doc = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise InterchangeInvalid(f"interchange file is not JSON: {e}") from None
    if not isinstance(doc, dict) or set(doc) != {"metadata", "data"}:
        raise InterchangeInvalid("interchange file must be an object with exactly 'metadata' and 'data'")
    _check_metadata(doc["metadata"], vote_key, node_id)
    if not isinstance(doc["data"], list):
        raise InterchangeInvalid("interchange 'data' must be a list")
    verify_key = nacl.signing.VerifyKey(vote_key)
    by_tx: dict[str, SignedVote] = {}
    for i, entry in enumerate(doc["data"]):
        sv = _entry(i, entry, node_id)
        try:
            verify_key.verify(sv.vote.signing_bytes(), sv.signature)
        except nacl.exceptions.BadSignatureError:
            raise InterchangeInvalid(
                f"data[{i}] ({sv.vote.tx_id} = {sv.vote.value}): signature does not verify under our vote key"
            ) from None
        other = by_tx.setdefault(sv.vote.tx_id, sv)
        if other != sv:
            what = "two values" if other.vote.value != sv.vote.value else "two different signed votes"
            raise InterchangeInvalid(
                f"data[{i}]: {sv.vote.tx_id} is listed with {what} "
                f"({other.vote.value} at {other.vote.timestamp_ms}, {sv.vote.value} at {sv.vote.timestamp_ms})"
            )
    return [by_tx[tx] for tx in sorted(by_tx)]


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A key twice in one object is refused: readers disagree on which one counts, an attacker's favourite."""
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise InterchangeInvalid(f"interchange file repeats the key {k!r} in one object")
        out[k] = v
    return out


def _check_metadata(meta: object, vote_key: bytes, node_id: str) -> None:
    if not isinstance(meta, dict) or set(meta) != _METADATA_KEYS:
        raise InterchangeInvalid(f"interchange 'metadata' must have exactly the keys {sorted(_METADATA_KEYS)}")
    if meta["interchange_format"] != INTERCHANGE_FORMAT:
        raise InterchangeInvalid(f"not a {INTERCHANGE_FORMAT} file (format {show(meta['interchange_format'])})")
    if meta["interchange_format_version"] != INTERCHANGE_VERSION:
        raise InterchangeInvalid(
            f"interchange format version {show(meta['interchange_format_version'])} is not supported "
            f"(this signer reads {INTERCHANGE_VERSION!r})"
        )
    if meta["domain_tag"] != DOMAIN_TAG.decode():
        raise InterchangeInvalid(f"file is for domain {show(meta['domain_tag'])}, ours is {DOMAIN_TAG.decode()!r}")
    key = meta["vote_public_key"]
    if not isinstance(key, str) or not _HEX_KEY.fullmatch(key):
        raise InterchangeInvalid(f"vote_public_key must be 64 lowercase hex characters, got {show(key)}")
    if key != vote_key.hex():
        raise InterchangeInvalid(f"file is for vote key {key}, this journal's key is {vote_key.hex()}: refusing")
    if meta["node_id"] != node_id:
        raise InterchangeInvalid(f"file is for node {show(meta['node_id'])}, this journal's node is {node_id!r}")


def _entry(i: int, entry: object, node_id: str) -> SignedVote:
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        raise InterchangeInvalid(f"data[{i}] must be an object with exactly the keys {sorted(_ENTRY_KEYS)}")
    sig = entry["signature"]
    if not isinstance(sig, str) or not _HEX_SIG.fullmatch(sig):
        raise InterchangeInvalid(f"data[{i}].signature must be 128 lowercase hex characters")
    try:
        check_node_id(node_id)
        vote = Vote(entry["tx_id"], parse_u64_text("value", entry["value"]), node_id,
                    parse_u64_text("timestamp_ms", entry["timestamp_ms"]))
    except (ValueError, InvalidCommand) as e:
        raise InterchangeInvalid(f"data[{i}]: {e}") from None
    return SignedVote(vote, bytes.fromhex(sig))
