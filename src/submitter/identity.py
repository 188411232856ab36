"""The submitter's identity in the log (R13): ``submitter:<name>``, signing with an Ed25519 key.

By default the key is derived from the submitter's Ethereum private key (BLAKE3 with a domain tag),
so a submitter has one secret to keep and the operator admits its log key with
``tvote writers add submitter:<name> <public key> --role submitter`` (``python -m submitter
--print-log-key`` prints it). ``--log-key-file`` gives a separate seed file instead.
"""

from __future__ import annotations

import blake3
import nacl.signing

from events.writers import RowSigner, submitter_writer

DOMAIN = b"threshold-vote/v1/submitter-log-key"


def log_seed(name: str, eth_private_key: str) -> bytes:
    """One key per (submitter name, Ethereum key): two submitters sharing an account still sign apart."""
    raw = bytes.fromhex(eth_private_key.strip().removeprefix("0x"))
    return blake3.blake3(DOMAIN + len(name).to_bytes(2, "big") + name.encode() + raw).digest()


def log_signer(name: str, eth_private_key: str, seed: bytes | None = None) -> RowSigner:
    return RowSigner(submitter_writer(name), nacl.signing.SigningKey(seed or log_seed(name, eth_private_key)))
