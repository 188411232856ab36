"""Who writes the log, and the signature every append carries (R13).

Every row of the log is signed by whoever wrote it: a trustee node (its vote key), the submitter or an
operator (keys admitted by ``WriterAdmitted`` events, like members). One Ed25519 signature per
*append*, not per row: a writer appends a batch of rows in one transaction, each row is chained to
the one before it (``events.store.chain_hash``), so a signature over the batch's first position and
its last row's hash vouches for every row of the batch and nothing else. It is stored on the batch's
last row with the first position it covers (``signed_from``). A row no signature covers (an INSERT
made by anyone holding the database role) is void for every honest follower (``events.follow``).

Measured (``bench/append_bench.py``): one signature per batch costs nothing visible at batch 500 and
one Ed25519 signature (~25 us) per single-vote append, against ~5 ms of fsyncs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

LOG_DOMAIN = b"threshold-vote/v1/log-batch"
OPERATOR_PREFIX = "operator:"
SUBMITTER_PREFIX = "submitter:"


def batch_bytes(first_position: int, last_hash: bytes) -> bytes:
    """What a writer signs for the rows ``first_position`` .. the row whose hash is ``last_hash``."""
    return struct.pack(">I", len(LOG_DOMAIN)) + LOG_DOMAIN + struct.pack(">q", first_position) + last_hash


@dataclass(frozen=True)
class RowSigner:
    """A writer's name and key: ``node_id`` for a trustee, ``operator:<name>``, ``submitter:<name>``."""

    writer: str
    key: nacl.signing.SigningKey

    @property
    def public_key(self) -> bytes:
        return bytes(self.key.verify_key)

    def sign_batch(self, first_position: int, last_hash: bytes) -> bytes:
        return self.key.sign(batch_bytes(first_position, last_hash)).signature

    @classmethod
    def from_seed(cls, writer: str, seed: bytes) -> RowSigner:
        return cls(writer, nacl.signing.SigningKey(seed))


def verify_batch(public_key: bytes, first_position: int, last_hash: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public_key).verify(batch_bytes(first_position, last_hash), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
        return False
    return True


def operator_writer(name: str) -> str:
    return OPERATOR_PREFIX + name


def submitter_writer(name: str) -> str:
    return SUBMITTER_PREFIX + name
