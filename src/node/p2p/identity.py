"""Ed25519 node identity for the libp2p host.

The libp2p peer id is derived from the node's Ed25519 public key, so the key file *is* the
node's network identity: whoever can read it can publish gossip in this node's name (and
every envelope signature they produce would be blamed on us, R7). That is why a key file
readable by group or others is refused outright instead of being "fixed" with chmod: a key
that was exposed must be treated as compromised by an operator, not silently accepted.

Key file format: exactly 32 raw seed bytes, or 64 hex characters (surrounding whitespace
allowed), so a file written by ``generate_key_file`` or by ``openssl rand -hex 32`` works.
"""

from __future__ import annotations

import binascii
import os
import stat
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

SEED_LEN = 32


class KeyFileError(ValueError):
    """The key file is missing, malformed or has unsafe permissions."""


def key_pair_from_seed(seed: bytes) -> KeyPair:
    """Build the libp2p Ed25519 key pair for a 32-byte seed (deterministic peer id)."""
    if len(seed) != SEED_LEN:
        raise KeyFileError(f"an Ed25519 seed is {SEED_LEN} bytes, got {len(seed)}")
    return create_new_key_pair(seed)


def peer_id_from_seed(seed: bytes) -> str:
    """The base58 peer id a host started with ``seed`` will have (for membership lists)."""
    return ID.from_pubkey(key_pair_from_seed(seed).public_key).to_base58()


def _parse_seed(raw: bytes, path: Path) -> bytes:
    if len(raw) == SEED_LEN:
        return raw
    text = raw.strip()
    if len(text) == 2 * SEED_LEN:
        try:
            return binascii.unhexlify(text)
        except binascii.Error as exc:
            raise KeyFileError(f"{path}: not valid hex") from exc
    raise KeyFileError(f"{path}: expected {SEED_LEN} raw bytes or {2 * SEED_LEN} hex characters")


def load_seed(path: str | os.PathLike[str]) -> bytes:
    """Read a seed from ``path``, refusing files that group or others can access.

    The check uses ``fstat`` on the opened descriptor, so a file swapped between the check
    and the read cannot slip through.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise KeyFileError(f"{p}: cannot open key file: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{p}: key file is not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{p}: key file mode {stat.S_IMODE(st.st_mode):04o} lets group/others access it; "
                "refusing to start (chmod 600 and treat the key as possibly exposed)"
            )
        raw = os.read(fd, 4 * SEED_LEN + 8)
    finally:
        os.close(fd)
    return _parse_seed(raw, p)


def load_key_pair(path: str | os.PathLike[str]) -> KeyPair:
    """Key pair from a key file (see ``load_seed`` for the permission rule)."""
    return key_pair_from_seed(load_seed(path))


def generate_key_file(path: str | os.PathLike[str], seed: bytes | None = None) -> str:
    """Create a new mode-0600 key file (fails if it exists) and return its peer id.

    ``O_EXCL`` plus an explicit mode means the file is never, even briefly, readable by
    others and an existing identity is never overwritten by accident.
    """
    seed = os.urandom(SEED_LEN) if seed is None else seed
    key_pair_from_seed(seed)  # validate length / curve point before touching the disk
    fd = os.open(Path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, binascii.hexlify(seed) + b"\n")
    finally:
        os.close(fd)
    return peer_id_from_seed(seed)
