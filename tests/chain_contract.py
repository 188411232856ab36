"""One contract for every chain adapter (`chain.port.ChainPort`); each adapter's test module subclasses it.

(The habit of tests/store_contract.py: the anvil JSON-RPC client and the in-memory chain pass the same
tests.) A subclass provides `make_rig()`: a freshly deployed contract with `rig.submitter` authorised,
automining, plus the few things a test must do to a chain that the port does not offer (stop and step
mining, an unfunded account, a view of the chain that cannot reach it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import blake3
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes

from chain import (
    RECORD_GAS,
    AlreadyKnown,
    AlreadyRecorded,
    ChainUnreachable,
    Fees,
    FeeTooLow,
    InsufficientFunds,
    NonceTooLow,
    NotSubmitter,
    OnChainRecord,
    ReceiptTimeout,
    ReplacementUnderpriced,
    WrongChainId,
    tx_id_hash,
)
from chain.model import decode_record_call, sign_record_tx
from chain.port import ChainPort

CERT = blake3.blake3(b"t signed votes, canonically encoded").digest()  # as ThresholdReached.certificate_hash
OTHER_CERT = blake3.blake3(b"some other certificate").digest()
UNKNOWN = keccak(b"a transaction no chain has seen")

PORT_METHODS = ("sign_record", "send_raw", "wait_for_receipt", "get_transaction", "get_receipt", "get_receipts",
                "pending_nonce", "mined_nonce", "block_number", "suggest_fees", "record_of", "record_count",
                "is_submitter", "recorded_events")


@dataclass
class Rig:
    chain: Any  # the adapter under test (a ChainPort)
    submitter: LocalAccount  # authorised, funded
    outsider: LocalAccount  # funded, never authorised
    poor: LocalAccount  # authorised, no funds
    set_automine: Callable[[bool], None]
    mine: Callable[[int], None]  # mine n blocks (the first takes every executable pool transaction)
    unreachable: Callable[[], Any]  # the same contract as seen by a client that cannot reach the chain


class ChainContract:
    def make_rig(self) -> Rig:
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------------------

    @staticmethod
    def sign(rig: Rig, tx_id: str, value: int = 1, cert: bytes = CERT, *, account: LocalAccount | None = None,
             nonce: int | None = None, fees: Fees | None = None, gas: int = RECORD_GAS):
        c = rig.chain
        account = account or rig.submitter
        nonce = c.pending_nonce(account.address) if nonce is None else nonce
        return c.sign_record(account, tx_id, value, cert, nonce=nonce, fees=fees or c.suggest_fees(), gas=gas)

    def record(self, rig: Rig, tx_id: str, value: int = 1, cert: bytes = CERT, **kw):
        signed = self.sign(rig, tx_id, value, cert, **kw)
        rig.chain.send_raw(signed.raw)
        return rig.chain.wait_for_receipt(signed.tx_hash, timeout=10)

    # -- the port ----------------------------------------------------------------------------------------

    def test_the_adapter_is_a_chain_port(self):
        rig = self.make_rig()
        assert isinstance(rig.chain, ChainPort)
        assert all(callable(getattr(rig.chain, m)) for m in PORT_METHODS)
        assert isinstance(rig.chain.chain_id, int) and rig.chain.address.startswith("0x")
        assert rig.chain.is_submitter(rig.submitter.address) and not rig.chain.is_submitter(rig.outsider.address)

    def test_sign_send_receipt_round_trip(self):
        rig = self.make_rig()
        c = rig.chain
        nonce = c.pending_nonce(rig.submitter.address)
        fees = Fees(max_fee_per_gas=5_000_000_000, max_priority_fee_per_gas=1_000_000_000)
        signed = c.sign_record(rig.submitter, "tx-s", 9, CERT, nonce=nonce, fees=fees)
        # signing is pure, and the raw bytes are a real EIP-1559 transaction
        assert signed.tx_hash == keccak(signed.raw)
        assert Account.recover_transaction(signed.raw) == rig.submitter.address == signed.sender
        fields = TypedTransaction.from_bytes(HexBytes(signed.raw)).as_dict()
        assert (fields["nonce"], fields["chainId"], fields["gas"]) == (nonce, c.chain_id, RECORD_GAS)
        assert (fields["maxFeePerGas"], fields["maxPriorityFeePerGas"]) == (5_000_000_000, 1_000_000_000)
        assert to_checksum_address(fields["to"]) == c.address == signed.contract
        assert decode_record_call(bytes(fields["data"])) == ("tx-s", 9, CERT)
        assert signed.raw == sign_record_tx(rig.submitter, c.address, c.chain_id, "tx-s", 9, CERT, nonce=nonce,
                                            fees=fees).raw  # every adapter signs the same bytes
        assert c.get_transaction(signed.tx_hash) is None and c.get_receipt(signed.tx_hash) is None
        assert c.pending_nonce(rig.submitter.address) == nonce

        assert c.send_raw(signed.raw) == signed.tx_hash
        mined = c.wait_for_receipt(signed.tx_hash, timeout=10)
        assert mined.tx_hash == signed.tx_hash and mined.block_number > 0 and mined.confirmations == 0
        assert 0 < mined.gas_used < 0.8 * RECORD_GAS
        receipt = c.get_receipt(signed.tx_hash)
        assert receipt is not None and receipt["status"] == 1
        assert (receipt["blockNumber"], bytes(receipt["blockHash"]), receipt["gasUsed"]) == (
            mined.block_number, mined.block_hash, mined.gas_used)
        assert bytes(receipt["transactionHash"]) == signed.tx_hash
        tx = c.get_transaction(signed.tx_hash)
        assert tx is not None and (tx["nonce"], tx["from"], tx["blockNumber"]) == (
            nonce, rig.submitter.address, mined.block_number)
        assert bytes(tx["hash"]) == signed.tx_hash
        assert c.mined_nonce(rig.submitter.address) == c.pending_nonce(rig.submitter.address) == nonce + 1
        assert c.block_number() >= mined.block_number

    def test_a_second_record_for_the_same_id_reverts_already_recorded(self):
        rig = self.make_rig()
        c = rig.chain
        assert c.record_of("tx-1").exists is False
        mined = self.record(rig, "tx-1", 42, CERT)
        rec = c.record_of("tx-1")
        assert (rec.exists, rec.value, rec.certificate_hash, rec.block_number) == (True, 42, CERT, mined.block_number)
        assert c.record_count() == 1

        nonce = c.pending_nonce(rig.submitter.address)
        other = self.sign(rig, "tx-1", 7, OTHER_CERT)
        c.send_raw(other.raw)  # the pool takes it: only the contract knows the id is written
        with pytest.raises(AlreadyRecorded) as err:
            c.wait_for_receipt(other.tx_hash, timeout=10)
        assert (err.value.tx_id, err.value.value, err.value.certificate_hash) == ("tx-1", 42, CERT)
        assert not err.value.matches(7, OTHER_CERT)
        assert err.value.receipt is not None and err.value.receipt["status"] == 0
        assert c.get_receipt(other.tx_hash)["status"] == 0  # mined, failed ...
        assert c.mined_nonce(rig.submitter.address) == nonce + 1  # ... and its nonce is used

        again = self.sign(rig, "tx-1", 42, CERT)  # a retried submission: refused, recognisably ours
        c.send_raw(again.raw)
        with pytest.raises(AlreadyRecorded) as err:
            c.wait_for_receipt(again.tx_hash, timeout=10)
        assert err.value.matches(42, CERT)
        assert [e.tx_id for e in c.recorded_events("tx-1")] == ["tx-1"]
        assert c.record_count() == 1 and c.record_of("tx-1").value == 42

    def test_an_unauthorised_sender_reverts_and_nothing_is_written(self):
        rig = self.make_rig()
        c = rig.chain
        signed = self.sign(rig, "tx-x", account=rig.outsider)
        c.send_raw(signed.raw)
        with pytest.raises(NotSubmitter) as err:
            c.wait_for_receipt(signed.tx_hash, timeout=10)
        assert err.value.caller == rig.outsider.address
        assert c.get_receipt(signed.tx_hash)["status"] == 0
        assert c.record_of("tx-x").exists is False
        assert c.recorded_events("tx-x") == [] and c.record_count() == 0

    def test_record_of_record_count_and_recorded_events(self):
        rig = self.make_rig()
        c = rig.chain
        blocks = {t: self.record(rig, t, i, CERT).block_number for i, t in enumerate(["a", "b", "c"])}
        failed = self.sign(rig, "b", 9, OTHER_CERT)
        c.send_raw(failed.raw)
        with pytest.raises(AlreadyRecorded):
            c.wait_for_receipt(failed.tx_hash, timeout=10)
        events = c.recorded_events()
        assert [e.tx_id for e in events] == ["a", "b", "c"] and c.record_count() == 3
        b = c.recorded_events("b")
        assert len(b) == 1
        ev = b[0]
        assert (ev.tx_id, ev.value, ev.certificate_hash, ev.submitter) == ("b", 1, CERT, rig.submitter.address)
        assert ev.tx_id_hash == tx_id_hash("b") and ev.block_number == blocks["b"] and ev.log_index >= 0
        assert c.get_receipt(ev.tx_hash)["status"] == 1
        assert [e.tx_id for e in c.recorded_events(from_block=blocks["b"])] == ["b", "c"]
        assert c.recorded_events("d") == []
        assert c.record_of("d") == OnChainRecord(False, 0, b"\x00" * 32, 0)

    def test_two_writes_for_one_id_in_the_same_block_only_the_first_succeeds(self):
        rig = self.make_rig()
        c = rig.chain
        rig.set_automine(False)
        nonce = c.pending_nonce(rig.submitter.address)
        first = self.sign(rig, "same-block", 1, CERT, nonce=nonce)
        second = self.sign(rig, "same-block", 2, OTHER_CERT, nonce=nonce + 1)
        c.send_raw(first.raw)
        c.send_raw(second.raw)
        rig.mine(1)
        assert c.wait_for_receipt(first.tx_hash, timeout=10).block_number == c.get_receipt(second.tx_hash)[
            "blockNumber"]
        with pytest.raises(AlreadyRecorded) as err:
            c.wait_for_receipt(second.tx_hash, timeout=10)
        assert err.value.matches(1, CERT)
        assert len(c.recorded_events("same-block")) == 1

    # -- the pool's refusals -----------------------------------------------------------------------------

    def test_nonce_too_low(self):
        rig = self.make_rig()
        c = rig.chain
        nonce = c.pending_nonce(rig.submitter.address)
        mined = self.sign(rig, "tx-n1", nonce=nonce)
        c.send_raw(mined.raw)
        c.wait_for_receipt(mined.tx_hash, timeout=10)
        late = self.sign(rig, "tx-n2", nonce=nonce)  # another transaction at a used nonce
        with pytest.raises(NonceTooLow) as err:
            c.send_raw(late.raw)
        assert "nonce too low" in err.value.rpc_message
        with pytest.raises(NonceTooLow):  # recovery re-broadcasting a mined transaction ...
            c.send_raw(mined.raw)
        assert c.get_receipt(mined.tx_hash)["status"] == 1  # ... then finds it by hash
        assert c.recorded_events("tx-n2") == []

    def test_already_known_and_replacement_at_the_same_nonce(self):
        rig = self.make_rig()
        c = rig.chain
        rig.set_automine(False)
        nonce = c.pending_nonce(rig.submitter.address)
        fees = c.suggest_fees()
        first = self.sign(rig, "tx-p", 1, nonce=nonce, fees=fees)
        c.send_raw(first.raw)
        with pytest.raises(AlreadyKnown):
            c.send_raw(first.raw)
        same_fee = self.sign(rig, "tx-p", 1, nonce=nonce, fees=fees, gas=210_000)
        with pytest.raises(ReplacementUnderpriced):
            c.send_raw(same_fee.raw)
        with pytest.raises(ReceiptTimeout):
            c.wait_for_receipt(first.tx_hash, timeout=0.3)

        bumped = self.sign(rig, "tx-p", 1, nonce=nonce, fees=fees.bumped())
        assert c.send_raw(bumped.raw) == bumped.tx_hash
        assert c.get_transaction(first.tx_hash) is None  # replaced: the pool forgot it
        rig.mine(1)
        assert c.wait_for_receipt(bumped.tx_hash, timeout=10).block_number > 0
        assert c.get_receipt(first.tx_hash) is None
        assert len(c.recorded_events("tx-p")) == 1
        with pytest.raises(NonceTooLow):
            c.send_raw(first.raw)

    def test_fee_below_the_base_fee(self):
        rig = self.make_rig()
        with pytest.raises(FeeTooLow):
            rig.chain.send_raw(self.sign(rig, "tx-lowfee", fees=Fees(1, 1)).raw)

    def test_insufficient_funds(self):
        rig = self.make_rig()
        signed = self.sign(rig, "tx-f", account=rig.poor, nonce=0)
        with pytest.raises(InsufficientFunds):
            rig.chain.send_raw(signed.raw)
        assert rig.chain.get_transaction(signed.tx_hash) is None

    def test_a_transaction_for_another_chain_is_refused(self):
        rig = self.make_rig()
        c = rig.chain
        signed = sign_record_tx(rig.submitter, c.address, c.chain_id + 1, "tx-c", 1, CERT,
                                nonce=c.pending_nonce(rig.submitter.address), fees=c.suggest_fees())
        with pytest.raises(WrongChainId):
            c.send_raw(signed.raw)
        assert c.recorded_events("tx-c") == []

    # -- lookups ---------------------------------------------------------------------------------------------

    def test_unknown_hashes(self):
        rig = self.make_rig()
        c = rig.chain
        assert c.get_transaction(UNKNOWN) is None and c.get_receipt(UNKNOWN) is None
        mined = self.record(rig, "tx-k")
        assert c.get_receipts([]) == []
        none, known = c.get_receipts([UNKNOWN, mined.tx_hash])
        assert none is None
        assert (known["status"], known["blockNumber"], bytes(known["transactionHash"])) == (
            1, mined.block_number, mined.tx_hash)

    def test_block_number_and_confirmations(self):
        rig = self.make_rig()
        c = rig.chain
        rig.set_automine(False)
        head = c.block_number()
        rig.mine(2)
        assert c.block_number() == head + 2
        signed = self.sign(rig, "tx-d")
        c.send_raw(signed.raw)
        rig.mine(1)
        assert c.get_receipt(signed.tx_hash)["blockNumber"] == c.block_number() == head + 3
        with pytest.raises(ReceiptTimeout):
            c.wait_for_receipt(signed.tx_hash, confirmations=2, timeout=0.3)
        rig.mine(2)
        assert c.wait_for_receipt(signed.tx_hash, confirmations=2, timeout=10).confirmations == 2

    def test_mined_and_pending_nonces_and_a_gap(self):
        rig = self.make_rig()
        c = rig.chain
        me = rig.submitter.address
        rig.set_automine(False)
        n = c.pending_nonce(me)
        assert c.mined_nonce(me) == n
        a, b = self.sign(rig, "tx-a", nonce=n), self.sign(rig, "tx-b", nonce=n + 1)
        c.send_raw(a.raw)
        c.send_raw(b.raw)
        assert (c.pending_nonce(me), c.mined_nonce(me)) == (n + 2, n)
        pending = c.get_transaction(a.tx_hash)
        assert pending is not None and pending["blockNumber"] is None and pending["nonce"] == n
        assert c.get_receipt(a.tx_hash) is None and c.get_receipts([a.tx_hash, b.tx_hash]) == [None, None]

        gapped = self.sign(rig, "tx-gap", nonce=n + 3)  # n + 2 missing: known, but held back
        c.send_raw(gapped.raw)
        assert c.pending_nonce(me) == n + 2
        rig.mine(1)
        assert (c.pending_nonce(me), c.mined_nonce(me)) == (n + 2, n + 2)
        assert c.get_receipt(gapped.tx_hash) is None and c.get_transaction(gapped.tx_hash) is not None

        fill = self.sign(rig, "tx-fill", nonce=n + 2)
        c.send_raw(fill.raw)
        assert c.pending_nonce(me) == n + 4
        rig.mine(1)
        assert c.wait_for_receipt(gapped.tx_hash, timeout=10).block_number == c.get_receipt(fill.tx_hash)[
            "blockNumber"]
        assert (c.pending_nonce(me), c.mined_nonce(me)) == (n + 4, n + 4)

    def test_automine_mines_each_transaction_as_it_arrives(self):
        rig = self.make_rig()
        c = rig.chain
        head = c.block_number()
        signed = self.sign(rig, "tx-auto")
        c.send_raw(signed.raw)
        mined = c.wait_for_receipt(signed.tx_hash, timeout=10)
        assert mined.block_number == head + 1 == c.block_number()

    # -- an unreachable chain ----------------------------------------------------------------------------------

    def test_an_unreachable_chain_raises_chain_unreachable_from_every_call_but_signing(self):
        rig = self.make_rig()
        fees = rig.chain.suggest_fees()
        nonce = rig.chain.pending_nonce(rig.submitter.address)
        mined = self.record(rig, "tx-u0")
        down = rig.unreachable()
        signed = down.sign_record(rig.submitter, "tx-u", 1, CERT, nonce=nonce + 1, fees=fees)  # no chain needed
        calls: list[Callable[[], object]] = [
            lambda: down.send_raw(signed.raw),
            lambda: down.wait_for_receipt(mined.tx_hash, timeout=1),
            lambda: down.get_transaction(mined.tx_hash),
            lambda: down.get_receipt(mined.tx_hash),
            lambda: down.get_receipts([mined.tx_hash]),
            lambda: down.pending_nonce(rig.submitter.address),
            lambda: down.mined_nonce(rig.submitter.address),
            lambda: down.block_number(),
            lambda: down.suggest_fees(),
            lambda: down.record_of("tx-u0"),
            lambda: down.record_count(),
            lambda: down.is_submitter(rig.submitter.address),
            lambda: down.recorded_events(),
        ]
        for call in calls:
            with pytest.raises(ChainUnreachable):
                call()
