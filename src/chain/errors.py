"""Typed chain errors, so the submitter can decide what to do from the type alone (issue 6).

The classification follows what the node says: a transaction the pool refused (`TxRejected` and
subclasses) was NOT included by that call; a `ContractRevert` means the contract refused the
write; `ChainUnreachable` means we do not know anything and must look again later.
"""

from __future__ import annotations

from typing import Any


class ChainError(Exception):
    """Base class for everything this package raises about the chain."""


class BadInput(ChainError, ValueError):
    """Caller's data is invalid (R2 tx id / u64 value / 32-byte hash): nothing was signed or sent."""


class ChainUnreachable(ChainError):
    """The RPC endpoint did not answer (connection refused, timeout, HTTP error)."""


class WrongChainId(ChainError):
    """The node's chain id is not the configured one: never sign or send for the wrong chain."""

    def __init__(self, expected: int, actual: int | None, message: str | None = None) -> None:
        super().__init__(message or f"chain id is {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


class ContractMismatch(ChainError):
    """No contract, or a different one, at the configured address: a misconfiguration, send nothing."""


class ReceiptTimeout(ChainError):
    """No receipt within the wait: the transaction may still be pending, or may have been dropped."""

    def __init__(self, tx_hash: bytes, timeout: float) -> None:
        super().__init__(f"no receipt for 0x{tx_hash.hex()} after {timeout}s")
        self.tx_hash = tx_hash
        self.timeout = timeout


# -- the node's transaction pool refused the raw transaction ----------------------------------------


class TxRejected(ChainError):
    """The node refused the raw transaction; `rpc_message` is the node's own words."""

    def __init__(self, rpc_message: str, rpc_code: int | None = None) -> None:
        super().__init__(rpc_message)
        self.rpc_message = rpc_message
        self.rpc_code = rpc_code


class NonceTooLow(TxRejected):
    """The nonce is already used on chain: look the transaction up by hash, do not re-sign blindly."""


class AlreadyKnown(TxRejected):
    """This exact transaction is already in the pool (anvil: 'transaction already imported')."""


class ReplacementUnderpriced(TxRejected):
    """A different transaction with this nonce is pending and ours does not pay enough more."""


class InsufficientFunds(TxRejected):
    """The sender cannot pay gas * max fee + value: an operator must fund the account."""


class FeeTooLow(TxRejected):
    """Max fee per gas below the block base fee: re-sign the same nonce with a higher fee."""


class OtherTxRejected(TxRejected):
    """A refusal this module does not know how to classify."""


# -- the contract refused the write -----------------------------------------------------------------


class ContractRevert(ChainError):
    """The contract reverted (seen by eth_call or as a mined transaction with status 0)."""

    def __init__(self, message: str, receipt: Any | None = None) -> None:
        super().__init__(message)
        self.receipt = receipt


class AlreadyRecorded(ContractRevert):
    """txId already has a record; `value` and `certificate_hash` are what is on chain.

    If they match ours, an earlier attempt of ours succeeded (confirmed); if not, alert.
    """

    def __init__(self, tx_id: str, value: int, certificate_hash: bytes, receipt: Any | None = None) -> None:
        super().__init__(
            f"{tx_id!r} already recorded with value {value}, certificate 0x{certificate_hash.hex()}", receipt
        )
        self.tx_id = tx_id
        self.value = value
        self.certificate_hash = certificate_hash

    def matches(self, value: int, certificate_hash: bytes) -> bool:
        """True if the on-chain record is the one we meant to write."""
        return self.value == value and self.certificate_hash == certificate_hash


class NotSubmitter(ContractRevert):
    """The sending account is not an authorised submitter of this contract."""

    def __init__(self, caller: str, receipt: Any | None = None) -> None:
        super().__init__(f"{caller} is not an authorised submitter", receipt)
        self.caller = caller


class NotOwner(ContractRevert):
    """Only the contract owner may authorise submitters."""

    def __init__(self, caller: str, receipt: Any | None = None) -> None:
        super().__init__(f"{caller} is not the contract owner", receipt)
        self.caller = caller


class InvalidTxId(ContractRevert):
    """The contract refused the tx id (R2: 1..128 characters of [A-Za-z0-9_.:-])."""

    def __init__(self, tx_id: str, receipt: Any | None = None) -> None:
        super().__init__(f"contract refused tx id {tx_id!r}", receipt)
        self.tx_id = tx_id


class TransactionReverted(ContractRevert):
    """A mined transaction failed and replaying it did not say why (e.g. out of gas)."""


__all__ = [
    "AlreadyKnown",
    "AlreadyRecorded",
    "BadInput",
    "ChainError",
    "ChainUnreachable",
    "ContractMismatch",
    "ContractRevert",
    "FeeTooLow",
    "InsufficientFunds",
    "InvalidTxId",
    "NonceTooLow",
    "NotOwner",
    "NotSubmitter",
    "OtherTxRejected",
    "ReceiptTimeout",
    "ReplacementUnderpriced",
    "TransactionReverted",
    "TxRejected",
    "WrongChainId",
]
