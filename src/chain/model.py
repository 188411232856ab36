"""What every chain adapter speaks: the record transaction, its call data, and the values the port returns.

Moved out of `chain.contract` so the port (`chain.port`) and its adapters (the JSON-RPC client in
`chain.contract`, the scripted `chain.memory.MemoryChain`) share one definition without the port
depending on web3. Signing is here too, because it needs no chain: both adapters sign a record
exactly the same way (`sign_record_tx`), and `decode_record_call` reads a raw transaction's call data
back, so a raw transaction taken from the log means the same thing to every adapter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, keccak

from chain.errors import BadInput

# Gas limit signed into every record transaction. Explicit (not estimated) so signing needs no node
# and an estimate cannot fail on an already-recorded id. Measured on anvil: ~97k gas for a short id,
# ~158k for the first record of a contract with a 128-character id (recordCount 0 -> 1 costs more).
RECORD_GAS = 250_000

TX_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
U64_MAX = 2**64 - 1

RECORD_SIGNATURE = "record(string,uint64,bytes32)"
RECORD_SELECTOR = function_signature_to_4byte_selector(RECORD_SIGNATURE)
RECORD_ARG_TYPES = ("string", "uint64", "bytes32")


def validate_record_args(tx_id: str, value: int, cert_hash: bytes) -> None:
    """R2 checks done before anything is signed, so bad input never reaches the chain."""
    if not isinstance(tx_id, str) or TX_ID_RE.fullmatch(tx_id) is None:
        raise BadInput(f"tx_id must be 1..128 characters of [A-Za-z0-9_.:-], got {tx_id!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise BadInput(f"value must be an integer in 0..2^64-1, got {value!r}")
    if not isinstance(cert_hash, bytes) or len(cert_hash) != 32:
        raise BadInput("certificate hash must be 32 bytes")


def tx_id_hash(tx_id: str) -> bytes:
    """The contract's storage key and the indexed `txIdHash` topic of `Recorded`."""
    return keccak(tx_id.encode("utf-8"))


# -- data -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fees signed into a transaction (wei per gas)."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    def bumped(self, percent: int = 20) -> Fees:
        """Fees for a same-nonce replacement: nodes want >= 10% more on both fields."""
        return Fees(
            self.max_fee_per_gas * (100 + percent) // 100 + 1,
            self.max_priority_fee_per_gas * (100 + percent) // 100 + 1,
        )


@dataclass(frozen=True)
class SignedRecordTx:
    """A signed `record` transaction, to be logged (SubmissionSigned) before it is broadcast."""

    tx_id: str
    value: int
    certificate_hash: bytes
    sender: str
    contract: str
    chain_id: int
    nonce: int
    gas: int
    fees: Fees
    raw: bytes
    tx_hash: bytes


@dataclass(frozen=True)
class OnChainRecord:
    """What `recordOf` returns; block_number is the block that wrote it (0 when absent)."""

    exists: bool
    value: int
    certificate_hash: bytes
    block_number: int


@dataclass(frozen=True)
class RecordedEvent:
    """One `Recorded` log: the on-chain evidence that a write happened."""

    tx_id: str
    tx_id_hash: bytes
    value: int
    certificate_hash: bytes
    submitter: str
    block_number: int
    tx_hash: bytes
    log_index: int


@dataclass(frozen=True)
class Mined:
    """A successful receipt, reduced to what the submitter logs (SubmissionConfirmed)."""

    tx_hash: bytes
    block_number: int
    block_hash: bytes
    gas_used: int
    confirmations: int


# -- the record transaction ---------------------------------------------------------------------------


def encode_record_call(tx_id: str, value: int, cert_hash: bytes) -> str:
    """Call data of `record(tx_id, value, cert_hash)`, 0x hex (what web3's `encode_abi` returns)."""
    return "0x" + (RECORD_SELECTOR + abi_encode(list(RECORD_ARG_TYPES), [tx_id, value, cert_hash])).hex()


def decode_record_call(data: bytes) -> tuple[str, int, bytes] | None:
    """(tx_id, value, cert_hash) from `record` call data; None if it is not a well-formed `record` call."""
    if len(data) < 4 or data[:4] != RECORD_SELECTOR:
        return None
    try:
        tx_id, value, cert = abi_decode(list(RECORD_ARG_TYPES), data[4:])
    except Exception:  # eth_abi raises several types for malformed data; all mean "not a record call"
        return None
    return str(tx_id), int(value), bytes(cert)


def tx_dict(to: str | None, data: str, nonce: int, gas: int, fees: Fees, chain_id: int) -> dict[str, Any]:
    """An EIP-1559 (type 2) transaction for eth_account to sign."""
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "gas": gas,
        "maxFeePerGas": fees.max_fee_per_gas,
        "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
        "value": 0,
        "data": data,
    }
    if to is not None:
        tx["to"] = to
    return tx


def sign_record_tx(
    account: LocalAccount,
    contract: str,
    chain_id: int,
    tx_id: str,
    value: int,
    cert_hash: bytes,
    *,
    nonce: int,
    fees: Fees,
    gas: int = RECORD_GAS,
) -> SignedRecordTx:
    """Sign `record(tx_id, value, cert_hash)` to `contract` with an explicit nonce and fees; sends nothing."""
    validate_record_args(tx_id, value, cert_hash)
    if nonce < 0:
        raise BadInput(f"nonce must be >= 0, got {nonce}")
    data = encode_record_call(tx_id, value, cert_hash)
    signed = account.sign_transaction(tx_dict(contract, data, nonce, gas, fees, chain_id))
    return SignedRecordTx(
        tx_id=tx_id,
        value=value,
        certificate_hash=bytes(cert_hash),
        sender=account.address,
        contract=contract,
        chain_id=chain_id,
        nonce=nonce,
        gas=gas,
        fees=fees,
        raw=bytes(signed.raw_transaction),
        tx_hash=bytes(signed.hash),
    )
