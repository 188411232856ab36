"""The chain port: exactly what the submitter and the chain audit need from a chain holding one ThresholdRecord.

Two adapters satisfy it, and `tests/chain_contract.py` holds both to the same promises:

- `chain.contract.ThresholdRecordClient`: JSON-RPC to a real node (anvil in the tests);
- `chain.memory.MemoryChain`: a scripted in-memory chain with the contract's rules, for tests that
  want to step mining or inject faults without a node.

Promises every adapter keeps (the contract suite checks each one):

- signing is pure: `sign_record` touches no chain, and the raw bytes it returns are a real signed
  EIP-1559 transaction (`TypedTransaction.from_bytes` reads its nonce and fees back);
- `send_raw` either accepts the raw transaction into the pool (returns its hash) or raises a
  `chain.errors.TxRejected` subclass saying why it was NOT taken: `NonceTooLow` (nonce already mined),
  `AlreadyKnown` (this very transaction is pending), `ReplacementUnderpriced` (another transaction is
  pending at this nonce and ours does not pay more; `Fees.bumped()` always does), `FeeTooLow` (max fee
  below the base fee), `InsufficientFunds`; or `WrongChainId` for a transaction signed for another chain;
- the contract writes a tx id once: a second `record` for it is mined but fails, and `wait_for_receipt`
  raises `AlreadyRecorded` with what is on chain; an account that is not an authorised submitter gets
  `NotSubmitter`; neither writes anything;
- a pending transaction is known (`get_transaction`) but has no receipt; `pending_nonce` counts the
  sender's pool transactions that can be mined next, `mined_nonce` only mined ones; unknown hashes give
  None;
- an unreachable chain raises `ChainUnreachable` from every call that needs it (never from signing).

Receipts are dicts with at least ``status`` (1 or 0), ``blockNumber`` and ``transactionHash`` (bytes);
`get_receipt` adds ``blockHash`` and ``gasUsed``. Transactions from `get_transaction` are dicts with at
least ``hash``, ``from``, ``nonce`` and ``blockNumber`` (None while pending).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from eth_account.signers.local import LocalAccount

from chain.model import RECORD_GAS, Fees, Mined, OnChainRecord, RecordedEvent, SignedRecordTx


@runtime_checkable
class ChainPort(Protocol):
    """One ThresholdRecord contract on one chain, as the submitter and the chain audit use it."""

    chain_id: int  # the chain transactions are signed for
    address: str  # the contract's checksummed address

    # -- signing (no chain) ----------------------------------------------------------------------------

    def sign_record(
        self,
        account: LocalAccount,
        tx_id: str,
        value: int,
        cert_hash: bytes,
        *,
        nonce: int,
        fees: Fees,
        gas: int = RECORD_GAS,
    ) -> SignedRecordTx:
        """Sign `record(tx_id, value, cert_hash)` with an explicit nonce and fees; raises BadInput, sends nothing."""
        ...

    # -- sending and waiting -----------------------------------------------------------------------------

    def send_raw(self, raw: bytes) -> bytes:
        """Broadcast a raw signed transaction; its hash, or a TxRejected subclass / WrongChainId."""
        ...

    def wait_for_receipt(self, tx_hash: bytes, *, timeout: float = 30.0, confirmations: int = 0) -> Mined:
        """The successful receipt (with `confirmations` blocks on top); a failed one raises the contract's
        typed error (AlreadyRecorded, NotSubmitter, ...); ReceiptTimeout if not mined in time."""
        ...

    # -- lookups (recovery, watching) --------------------------------------------------------------------

    def get_transaction(self, tx_hash: bytes) -> dict[str, Any] | None:
        """The transaction if the chain knows it (pending or mined), else None."""
        ...

    def get_receipt(self, tx_hash: bytes) -> dict[str, Any] | None:
        """The receipt if the transaction is mined, else None (pending, dropped or unknown)."""
        ...

    def get_receipts(self, tx_hashes: Sequence[bytes]) -> list[dict[str, Any] | None]:
        """Receipts of many transactions at once, in order (None where not mined)."""
        ...

    def pending_nonce(self, address: str) -> int:
        """Next nonce counting pool transactions (what a new transaction should use)."""
        ...

    def mined_nonce(self, address: str) -> int:
        """Next nonce counting only mined transactions (lower than pending if some are stuck)."""
        ...

    def block_number(self) -> int:
        """The latest block's number (confirmations are counted against it)."""
        ...

    def suggest_fees(self) -> Fees:
        """Fees a new transaction should be signed with now."""
        ...

    # -- contract state ------------------------------------------------------------------------------------

    def record_of(self, tx_id: str) -> OnChainRecord:
        """The contract's record for tx_id (exists=False if none)."""
        ...

    def record_count(self) -> int:
        """How many records the contract holds."""
        ...

    def is_submitter(self, address: str) -> bool:
        """Whether the contract lets `address` record."""
        ...

    def recorded_events(self, tx_id: str | None = None, *, from_block: int = 0) -> list[RecordedEvent]:
        """`Recorded` events in chain order, optionally only those for one tx id."""
        ...


__all__ = ["ChainPort"]
