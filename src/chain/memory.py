"""A scripted in-memory chain holding one ThresholdRecord: the port's second adapter.

`MemoryChain` keeps what a node keeps for the submitter's purposes, with anvil's semantics
(checked by `tests/chain_contract.py`, which runs the same tests here and on a real anvil):

- per-sender nonces, mined and pending (pending counts the pool transactions that can be mined next,
  so a nonce gap holds later ones back, as on anvil);
- a mempool of real signed EIP-1559 transactions: `send_raw` recovers the sender from the signature
  and decodes the call data, so a raw transaction taken from the event log works exactly like one
  just signed (nothing is remembered from `sign_record`, which is pure);
- pool rules and their typed errors, with anvil's wording: `NonceTooLow`, `AlreadyKnown`,
  `ReplacementUnderpriced` (anvil replaces a pending transaction only for a strictly higher max fee),
  `FeeTooLow`, `InsufficientFunds`, `WrongChainId`;
- blocks with an EIP-1559 base fee, receipts, the contract's rules (only authorised submitters may
  record, a tx id is written once: a second `record` is mined with status 0 and `wait_for_receipt`
  raises `AlreadyRecorded` with what is on chain), `Recorded` events, plain transfers (the submitter's
  zero-value gap fillers), balances charged for gas.

Scripting, for tests:

- mining: automatic (``automine=True``: every accepted transaction is mined at once, as anvil's
  automine) or stepped (`set_automine(False)`, then `mine()`), or both;
- faults: `go_down()` / `come_up()` / `down_for(seconds)` (every call but signing raises
  `ChainUnreachable`), `lose_next_sends(n)` (the send "succeeds" but the transaction never reaches the
  pool), `lose_next_replies(n)` (the pool takes it but the caller sees `ChainUnreachable`),
  `drop_pending()` (the node forgets its pool), `set_base_fee(wei)` (fees fall behind);
- state: `fund(address, wei)`, `set_submitter(address, authorised)`; `sent` lists the hash of every
  raw transaction the pool accepted, in order (one sent again after `drop_pending()` shows up twice).

Not modelled: reorgs, contract creation, legacy and EIP-2930 transactions, eth_call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import rlp
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions import TypedTransaction
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from hexbytes import HexBytes

from chain.errors import (
    AlreadyKnown,
    AlreadyRecorded,
    ChainUnreachable,
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
    WrongChainId,
)
from chain.model import (
    RECORD_GAS,
    TX_ID_RE,
    Fees,
    Mined,
    OnChainRecord,
    RecordedEvent,
    SignedRecordTx,
    decode_record_call,
    sign_record_tx,
    tx_id_hash,
)

DEFAULT_CHAIN_ID = 31337  # anvil's
DEFAULT_BASE_FEE = 1_000_000_000  # anvil's first base fee: 1 gwei
DEFAULT_PRIORITY_FEE = 1_000_000_000
DEFAULT_BALANCE = 10_000 * 10**18  # what anvil gives each dev account
BLOCK_GAS_LIMIT = 30_000_000

# Gas charged by the scripted contract: the intrinsic cost plus roughly what anvil measures for
# ThresholdRecord (a record ~79k in all for a short id, more for the contract's first).
RECORD_EXEC_GAS = 52_000
FIRST_RECORD_EXTRA_GAS = 17_100
ADMIN_EXEC_GAS = 25_000
REVERT_EXEC_GAS = 3_000

SET_SUBMITTER_SELECTOR = function_signature_to_4byte_selector("setSubmitter(address,bool)")


Why = Callable[[dict[str, Any]], ContractRevert]


def _reverted(message: str) -> Why:
    return lambda receipt: TransactionReverted(message, receipt)


@dataclass
class _Tx:
    """A transaction the chain accepted (pending, or mined when block_number is set)."""

    hash: bytes
    raw: bytes
    sender: str  # checksummed
    nonce: int
    to: str | None
    data: bytes
    value: int
    gas: int
    fees: Fees
    chain_id: int
    seq: int  # arrival order in the pool
    block_number: int | None = None
    block_hash: bytes | None = None
    index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash, "from": self.sender, "to": self.to, "nonce": self.nonce, "input": self.data,
            "value": self.value, "gas": self.gas, "maxFeePerGas": self.fees.max_fee_per_gas,
            "maxPriorityFeePerGas": self.fees.max_priority_fee_per_gas, "chainId": self.chain_id, "type": 2,
            "blockNumber": self.block_number, "blockHash": self.block_hash, "transactionIndex": self.index,
        }


@dataclass
class _Receipt:
    tx: _Tx
    status: int
    gas_used: int
    effective_gas_price: int
    why: Why | None  # makes the typed error of a failed transaction, given its receipt

    def as_dict(self) -> dict[str, Any]:
        return {
            "transactionHash": self.tx.hash, "blockNumber": self.tx.block_number, "blockHash": self.tx.block_hash,
            "transactionIndex": self.tx.index, "status": self.status, "gasUsed": self.gas_used,
            "effectiveGasPrice": self.effective_gas_price, "from": self.tx.sender, "to": self.tx.to,
            "contractAddress": None, "type": 2,
        }


@dataclass
class _Block:
    number: int
    hash: bytes
    base_fee: int
    gas_used: int = 0
    txs: list[bytes] = field(default_factory=list)


def _create_address(sender: str, nonce: int) -> str:
    return to_checksum_address(keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:])


def _next_base_fee(base: int, gas_used: int, gas_limit: int) -> int:
    """EIP-1559: the base fee moves by up to 1/8 towards keeping blocks half full."""
    target = gas_limit // 2
    if gas_used == target:
        return base
    if gas_used > target:
        return base + max(1, base * (gas_used - target) // target // 8)
    return max(0, base - base * (target - gas_used) // target // 8)


def _intrinsic_gas(data: bytes) -> int:
    zeros = data.count(0)
    return 21_000 + 4 * zeros + 16 * (len(data) - zeros)


class MemoryChain:
    """One ThresholdRecord, deployed by `owner` with `submitters` authorised, on a scripted chain."""

    def __init__(
        self,
        owner: str,
        submitters: Sequence[str] = (),
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        automine: bool = True,
        base_fee: int = DEFAULT_BASE_FEE,
        default_balance: int = DEFAULT_BALANCE,
        block_gas_limit: int = BLOCK_GAS_LIMIT,
    ) -> None:
        self.chain_id = chain_id
        self.automine = automine
        self.block_gas_limit = block_gas_limit
        self.default_balance = default_balance
        self._owner = to_checksum_address(owner)
        self.address = _create_address(self._owner, 0)  # where anvil puts the owner's first deployment
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._balances: dict[str, int] = {}
        self._nonces: dict[str, int] = {self._owner.lower(): 1}  # the deployment used nonce 0
        self._pool: dict[str, dict[int, _Tx]] = {}
        self._txs: dict[bytes, _Tx] = {}
        self._receipts: dict[bytes, _Receipt] = {}
        self._seq = 0
        self._submitters = {to_checksum_address(s).lower() for s in submitters}
        self._records: dict[bytes, tuple[int, bytes, int]] = {}  # tx id hash -> (value, cert, block)
        self._events: list[RecordedEvent] = []
        genesis = _Block(0, keccak(b"MemoryChain genesis" + chain_id.to_bytes(8, "big")), base_fee)
        self._blocks: list[_Block] = [genesis]
        self._next_base = base_fee
        with self._lock:
            self._seal([])  # block 1: the deployment, as on a fresh anvil
        self._down_until = 0.0
        self._lose_sends = 0
        self._lose_replies = 0
        self.sent: list[bytes] = []

    # -- the port: signing (no chain) ------------------------------------------------------------------

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
        """Exactly what the RPC adapter signs (`chain.model.sign_record_tx`); touches no state."""
        return sign_record_tx(account, self.address, self.chain_id, tx_id, value, cert_hash, nonce=nonce,
                              fees=fees, gas=gas)

    # -- the port: sending and waiting ------------------------------------------------------------------

    def send_raw(self, raw: bytes) -> bytes:
        with self._lock:
            self._reach()
            if self._lose_sends:
                self._lose_sends -= 1
                return keccak(raw)  # "accepted", and never seen again
            tx = self._decode(raw)
            self._admit(tx)
            self.sent.append(tx.hash)
            if self.automine:
                self._mine_ready()
            if self._lose_replies:
                self._lose_replies -= 1
                raise ChainUnreachable("MemoryChain: the reply to eth_sendRawTransaction was lost (scripted)")
            return tx.hash

    def wait_for_receipt(self, tx_hash: bytes, *, timeout: float = 30.0, confirmations: int = 0) -> Mined:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self._reach()
                r = self._receipts.get(bytes(tx_hash))
                if r is not None:
                    if r.status != 1:
                        raise (r.why or _reverted("mined with status 0"))(r.as_dict())
                    depth = self._head().number - (r.tx.block_number or 0)
                    if depth >= confirmations:
                        return Mined(r.tx.hash, r.tx.block_number or 0, r.tx.block_hash or b"", r.gas_used, depth)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReceiptTimeout(bytes(tx_hash), timeout)
                self._changed.wait(min(left, 0.05))  # short: an outage may end while we wait

    # -- the port: lookups --------------------------------------------------------------------------------

    def get_transaction(self, tx_hash: bytes) -> dict[str, Any] | None:
        with self._lock:
            self._reach()
            tx = self._txs.get(bytes(tx_hash))
            return None if tx is None else tx.as_dict()

    def get_receipt(self, tx_hash: bytes) -> dict[str, Any] | None:
        with self._lock:
            self._reach()
            r = self._receipts.get(bytes(tx_hash))
            return None if r is None else r.as_dict()

    def get_receipts(self, tx_hashes: Sequence[bytes]) -> list[dict[str, Any] | None]:
        """Like the RPC adapter's batch: only ``status``, ``blockNumber`` and ``transactionHash``."""
        if not tx_hashes:
            return []
        with self._lock:
            self._reach()
            out: list[dict[str, Any] | None] = []
            for h in tx_hashes:
                r = self._receipts.get(bytes(h))
                out.append(None if r is None else {"status": r.status, "blockNumber": r.tx.block_number,
                                                   "transactionHash": r.tx.hash})
            return out

    def pending_nonce(self, address: str) -> int:
        with self._lock:
            self._reach()
            key = to_checksum_address(address).lower()
            nonce = self._nonces.get(key, 0)
            queue = self._pool.get(key, {})
            while nonce in queue:
                nonce += 1
            return nonce

    def mined_nonce(self, address: str) -> int:
        with self._lock:
            self._reach()
            return self._nonces.get(to_checksum_address(address).lower(), 0)

    def block_number(self) -> int:
        with self._lock:
            self._reach()
            return self._head().number

    def suggest_fees(self, priority_fee: int = DEFAULT_PRIORITY_FEE) -> Fees:
        """As the RPC adapter: 2 x the latest block's base fee + tip."""
        with self._lock:
            self._reach()
            return Fees(2 * self._head().base_fee + priority_fee, priority_fee)

    # -- the port: contract state ----------------------------------------------------------------------

    def record_of(self, tx_id: str) -> OnChainRecord:
        with self._lock:
            self._reach()
            rec = self._records.get(tx_id_hash(tx_id))
            if rec is None:
                return OnChainRecord(False, 0, b"\x00" * 32, 0)
            return OnChainRecord(True, rec[0], rec[1], rec[2])

    def record_count(self) -> int:
        with self._lock:
            self._reach()
            return len(self._records)

    def is_submitter(self, address: str) -> bool:
        with self._lock:
            self._reach()
            return to_checksum_address(address).lower() in self._submitters

    def recorded_events(self, tx_id: str | None = None, *, from_block: int = 0) -> list[RecordedEvent]:
        with self._lock:
            self._reach()
            return [e for e in self._events if e.block_number >= from_block and (tx_id is None or e.tx_id == tx_id)]

    def owner(self) -> str:
        return self._owner

    # -- scripting ------------------------------------------------------------------------------------------

    def set_automine(self, on: bool) -> None:
        """Automine on or off; switching it on mines what the pool holds (anvil's evm_setAutomine)."""
        with self._lock:
            self.automine = on
            if on:
                self._mine_ready()

    def mine(self, blocks: int = 1) -> int:
        """Mine `blocks` blocks (the first takes every executable pool transaction); returns the head."""
        with self._lock:
            for _ in range(blocks):
                self._seal(self._pick())
            return self._head().number

    def pending(self) -> list[bytes]:
        """Hashes of the transactions in the pool, in arrival order."""
        with self._lock:
            return [t.hash for t in sorted((t for q in self._pool.values() for t in q.values()), key=lambda t: t.seq)]

    def go_down(self) -> None:
        """Unreachable until `come_up()`."""
        with self._lock:
            self._down_until = float("inf")

    def come_up(self) -> None:
        with self._changed:
            self._down_until = 0.0
            self._changed.notify_all()

    def down_for(self, seconds: float) -> None:
        """Unreachable for the next `seconds`."""
        with self._lock:
            self._down_until = time.monotonic() + seconds

    @property
    def reachable(self) -> bool:
        return time.monotonic() >= self._down_until

    def lose_next_sends(self, n: int = 1) -> None:
        """The next `n` sends return a hash but the transaction never reaches the pool."""
        with self._lock:
            self._lose_sends += n

    def lose_next_replies(self, n: int = 1) -> None:
        """The next `n` sends reach the pool but the caller gets ChainUnreachable."""
        with self._lock:
            self._lose_replies += n

    def drop_pending(self) -> int:
        """Forget every pool transaction (a node restarted without its pool); returns how many."""
        with self._lock:
            dropped = [t for q in self._pool.values() for t in q.values()]
            self._pool.clear()
            for t in dropped:
                self._txs.pop(t.hash, None)
            return len(dropped)

    def set_base_fee(self, wei: int) -> None:
        """The base fee of the next block (and of what suggest_fees sees)."""
        with self._lock:
            self._next_base = wei
            self._head().base_fee = wei

    def fund(self, address: str, wei: int) -> None:
        with self._lock:
            self._balances[to_checksum_address(address).lower()] = wei

    def balance(self, address: str) -> int:
        with self._lock:
            return self._balances.get(to_checksum_address(address).lower(), self.default_balance)

    def set_submitter(self, address: str, authorised: bool) -> None:
        """What the owner's setSubmitter does, without a transaction."""
        with self._lock:
            key = to_checksum_address(address).lower()
            if authorised:
                self._submitters.add(key)
            else:
                self._submitters.discard(key)

    # -- the pool ---------------------------------------------------------------------------------------------

    def _reach(self) -> None:
        if time.monotonic() < self._down_until:
            raise ChainUnreachable("MemoryChain: connection refused (scripted outage)")

    def _decode(self, raw: bytes) -> _Tx:
        raw = bytes(raw)
        if not raw or raw[0] != 2:
            raise OtherTxRejected("MemoryChain: only EIP-1559 (type 2) transactions are modelled")
        try:
            fields = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
            sender = Account.recover_transaction(raw)
        except Exception as exc:  # malformed bytes or signature: the node cannot decode them
            raise OtherTxRejected(f"failed to decode signed transaction: {exc}") from exc
        if int(fields["chainId"]) != self.chain_id:
            raise WrongChainId(self.chain_id, None, "node refused the transaction: invalid chain id for signer")
        to = fields.get("to")
        if not to:
            raise OtherTxRejected("MemoryChain: contract creation is not modelled")
        self._seq += 1
        return _Tx(hash=keccak(raw), raw=raw, sender=to_checksum_address(sender), nonce=int(fields["nonce"]),
                   to=to_checksum_address(to), data=bytes(fields.get("data") or b""), value=int(fields["value"]),
                   gas=int(fields["gas"]), fees=Fees(int(fields["maxFeePerGas"]), int(fields["maxPriorityFeePerGas"])),
                   chain_id=self.chain_id, seq=self._seq)

    def _admit(self, tx: _Tx) -> None:
        key = tx.sender.lower()
        if tx.nonce < self._nonces.get(key, 0):
            raise NonceTooLow("nonce too low")
        if tx.hash in self._txs:
            raise AlreadyKnown("transaction already imported")
        if tx.gas < _intrinsic_gas(tx.data):
            raise OtherTxRejected("intrinsic gas too low")
        if tx.fees.max_fee_per_gas < self._next_base:
            raise FeeTooLow("max fee per gas less than block base fee")
        if self.balance(tx.sender) < tx.gas * tx.fees.max_fee_per_gas + tx.value:
            raise InsufficientFunds("Insufficient funds for gas * price + value")
        queue = self._pool.setdefault(key, {})
        old = queue.get(tx.nonce)
        if old is not None:
            if tx.fees.max_fee_per_gas <= old.fees.max_fee_per_gas:  # anvil: a strictly higher max fee
                raise ReplacementUnderpriced("replacement transaction underpriced")
            self._txs.pop(old.hash, None)
        queue[tx.nonce] = tx
        self._txs[tx.hash] = tx

    # -- mining ---------------------------------------------------------------------------------------------

    def _head(self) -> _Block:
        return self._blocks[-1]

    def _mine_ready(self) -> None:
        picked = self._pick()
        if picked:
            self._seal(picked)

    def _pick(self) -> list[_Tx]:
        """The pool transactions the next block takes: per sender in nonce order, senders by arrival."""
        nonces = dict(self._nonces)
        picked: list[_Tx] = []
        gas = 0
        while True:
            ready = []
            for key, queue in self._pool.items():
                t = queue.get(nonces.get(key, 0))
                if t is not None and t.fees.max_fee_per_gas >= self._next_base and gas + t.gas <= self.block_gas_limit:
                    ready.append(t)
            if not ready:
                return picked
            t = min(ready, key=lambda t: t.seq)
            picked.append(t)
            gas += t.gas
            nonces[t.sender.lower()] = t.nonce + 1

    def _seal(self, txs: list[_Tx]) -> None:
        """Append a block holding `txs` (may be empty), executing each in order."""
        parent = self._head()
        number = parent.number + 1
        block_hash = keccak(parent.hash + number.to_bytes(8, "big") + b"".join(t.hash for t in txs))
        block = _Block(number, block_hash, self._next_base)
        for index, tx in enumerate(txs):
            key = tx.sender.lower()
            self._pool[key].pop(tx.nonce, None)
            if not self._pool[key]:
                del self._pool[key]
            self._nonces[key] = tx.nonce + 1
            tx.block_number, tx.block_hash, tx.index = number, block_hash, index
            price = min(tx.fees.max_fee_per_gas, block.base_fee + tx.fees.max_priority_fee_per_gas)
            status, used, why = self._execute(tx, number)
            self._balances[key] = self.balance(tx.sender) - used * price - (tx.value if status else 0)
            if status and tx.value:
                dest = tx.to.lower()  # type: ignore[union-attr]
                self._balances[dest] = self.balance(dest) + tx.value
            self._receipts[tx.hash] = _Receipt(tx, status, used, price, why)
            block.gas_used += used
            block.txs.append(tx.hash)
        self._blocks.append(block)
        self._next_base = _next_base_fee(block.base_fee, block.gas_used, self.block_gas_limit)
        self._changed.notify_all()

    def _execute(self, tx: _Tx, block_number: int) -> tuple[int, int, Why | None]:
        """Run one transaction: (status, gas used, what makes its typed error if it failed)."""
        base = _intrinsic_gas(tx.data)
        if tx.to != self.address:
            return 1, base, None  # a plain transfer (the submitter's gap filler)
        selector = tx.data[:4]
        call = decode_record_call(tx.data)
        if call is not None:
            tx_id, value, cert = call
            if tx.sender.lower() not in self._submitters:
                return self._revert(tx, base, lambda r: NotSubmitter(tx.sender, r))
            if TX_ID_RE.fullmatch(tx_id) is None:
                return self._revert(tx, base, lambda r: InvalidTxId(tx_id, r))
            key = tx_id_hash(tx_id)
            if key in self._records:
                have_value, have_cert, _ = self._records[key]
                return self._revert(tx, base, lambda r: AlreadyRecorded(tx_id, have_value, have_cert, r))
            need = base + RECORD_EXEC_GAS + (FIRST_RECORD_EXTRA_GAS if not self._records else 0)
            if tx.gas < need:
                return 0, tx.gas, _reverted(f"0x{tx.hash.hex()} ran out of gas")
            self._records[key] = (value, cert, block_number)
            index = sum(1 for e in self._events if e.block_number == block_number)
            self._events.append(RecordedEvent(tx_id, key, value, cert, tx.sender, block_number, tx.hash, index))
            return 1, need, None
        if selector == SET_SUBMITTER_SELECTOR and len(tx.data) == 68:
            who, authorised = abi_decode(["address", "bool"], tx.data[4:])
            if tx.sender != self._owner:
                return self._revert(tx, base, lambda r: NotOwner(tx.sender, r))
            if tx.gas < base + ADMIN_EXEC_GAS:
                return 0, tx.gas, _reverted(f"0x{tx.hash.hex()} ran out of gas")
            self.set_submitter(who, bool(authorised))
            return 1, base + ADMIN_EXEC_GAS, None
        return self._revert(tx, base, _reverted(f"reverted with unrecognised data 0x{selector.hex()}"))

    @staticmethod
    def _revert(tx: _Tx, base: int, why: Why) -> tuple[int, int, Why]:
        return 0, min(tx.gas, base + REVERT_EXEC_GAS), why


__all__ = ["MemoryChain"]
