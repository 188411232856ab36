"""Signer safety (R14): an honest trustee never signs two values for one transaction.

- ``Signer``: signs ballots only after journaling them durably (``journal.py``, SQLite WAL,
  synchronous=FULL, one fsync per call); refuses a second value for a tx_id; retries return
  the earlier signed vote unchanged.
- ``LocalLock``: one process per journal on a machine (flock naming its holder).
- ``InstanceClaim``: one process per trustee across machines (a create-only etcd key under a lease).
- ``interchange``: export/import of the journal (an EIP-3076-like JSON), to move a trustee.

See docs/signer.md for the design, the failure analysis and the interchange format.
"""

from typing import TYPE_CHECKING

from .core import MAX_BALLOTS, Outcome, Refused, Signed, Withheld, request_refused
from .errors import (
    ClaimLost,
    ContradictoryRequest,
    InstanceClaimed,
    InterchangeConflict,
    InterchangeInvalid,
    JournalCorrupt,
    JournalError,
    JournalMissing,
    JournalPermissions,
    JournalUnavailable,
    SignerClosed,
    SignerError,
    SignerLocked,
    WrongJournal,
)
from .interchange import INTERCHANGE_FORMAT, INTERCHANGE_VERSION
from .lock import Holder, LocalLock
from .signer import COUNTERS, ImportResult, Signer, lock_path

if TYPE_CHECKING:
    from .claim import InstanceClaim


def __getattr__(name: str) -> object:
    """``InstanceClaim`` is imported on first use: it pulls in pyetcd and grpc (~0.2 s), which the
    operator commands and a claim-less signer never need."""
    if name == "InstanceClaim":
        from .claim import InstanceClaim

        return InstanceClaim
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COUNTERS",
    "INTERCHANGE_FORMAT",
    "INTERCHANGE_VERSION",
    "MAX_BALLOTS",
    "ClaimLost",
    "ContradictoryRequest",
    "Holder",
    "ImportResult",
    "InstanceClaim",
    "InstanceClaimed",
    "InterchangeConflict",
    "InterchangeInvalid",
    "JournalCorrupt",
    "JournalError",
    "JournalMissing",
    "JournalPermissions",
    "JournalUnavailable",
    "LocalLock",
    "Outcome",
    "Refused",
    "Signed",
    "Signer",
    "SignerClosed",
    "SignerError",
    "SignerLocked",
    "Withheld",
    "WrongJournal",
    "lock_path",
    "request_refused",
]
