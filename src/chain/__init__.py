"""Chain side of exactly-once submission (issue 6, R11): the ThresholdRecord contract behind a port.

`chain.port.ChainPort` is what the submitter and the chain audit need from a chain; `chain.contract`
is its JSON-RPC adapter (signs, sends, waits and reads on a real node) and `chain.memory` its scripted
in-memory one; `chain.model` holds the values and the record signing they share, `chain.errors` the
typed errors the submitter branches on. Nothing here knows about the event log: the submitter composes them.
"""

from chain.contract import ThresholdRecordClient, classify_rpc_error, load_artifact, make_web3
from chain.errors import (
    AlreadyKnown,
    AlreadyRecorded,
    BadInput,
    ChainError,
    ChainUnreachable,
    ContractMismatch,
    ContractRevert,
    FeeTooLow,
    InsufficientFunds,
    InvalidTxId,
    NonceTooLow,
    NotOwner,
    NotSubmitter,
    OtherTxRejected,
    ReceiptTimeout,
    ReplacementUnderpriced,
    TransactionReverted,
    TxRejected,
    WrongChainId,
)
from chain.model import (
    RECORD_GAS,
    Fees,
    Mined,
    OnChainRecord,
    RecordedEvent,
    SignedRecordTx,
    tx_id_hash,
    validate_record_args,
)
from chain.port import ChainPort

__all__ = [
    "RECORD_GAS",
    "AlreadyKnown",
    "AlreadyRecorded",
    "BadInput",
    "ChainError",
    "ChainPort",
    "ChainUnreachable",
    "ContractMismatch",
    "ContractRevert",
    "FeeTooLow",
    "Fees",
    "InsufficientFunds",
    "InvalidTxId",
    "Mined",
    "NonceTooLow",
    "NotOwner",
    "NotSubmitter",
    "OnChainRecord",
    "OtherTxRejected",
    "ReceiptTimeout",
    "RecordedEvent",
    "ReplacementUnderpriced",
    "SignedRecordTx",
    "ThresholdRecordClient",
    "TransactionReverted",
    "TxRejected",
    "WrongChainId",
    "classify_rpc_error",
    "load_artifact",
    "make_web3",
    "tx_id_hash",
    "validate_record_args",
]
