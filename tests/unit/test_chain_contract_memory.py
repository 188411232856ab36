"""The chain port's contract (tests/chain_contract.py) against the scripted in-memory chain, and what only
the in-memory chain scripts (outages, lost sends and replies, a dropped pool, the base fee)."""

from __future__ import annotations

import threading
import time

import pytest
from chain_contract import ChainContract, Rig
from eth_account import Account

from chain import AlreadyKnown, ChainUnreachable, Fees, FeeTooLow, NonceTooLow
from chain.memory import MemoryChain
from chain.model import sign_record_tx
from devstack.anvil import dev_private_key

OWNER = Account.from_key(dev_private_key(0))


class TestChainContractMemory(ChainContract):
    def make_rig(self) -> Rig:
        submitter, outsider, poor = Account.create(), Account.create(), Account.create()
        chain = MemoryChain(OWNER.address, [submitter.address, poor.address])
        chain.fund(poor.address, 0)

        def unreachable() -> MemoryChain:
            chain.go_down()
            return chain

        return Rig(chain, submitter, outsider, poor, chain.set_automine, chain.mine, unreachable)


# -- what only the in-memory chain scripts --------------------------------------------------------------

CERT = b"\x07" * 32


def _chain(**kw) -> tuple[MemoryChain, Account]:
    sub = Account.create()
    return MemoryChain(OWNER.address, [sub.address], **kw), sub


def test_a_raw_transaction_from_the_log_is_decoded_not_remembered():
    """Signed elsewhere (another process, before a restart): the chain learns tx id, value and
    certificate from the call data alone."""
    chain, sub = _chain()
    raw = sign_record_tx(sub, chain.address, chain.chain_id, "from-the-log", 77, CERT, nonce=0,
                         fees=Fees(10**10, 10**9)).raw
    tx_hash = chain.send_raw(raw)
    assert chain.wait_for_receipt(tx_hash, timeout=1).block_number == 2
    rec = chain.record_of("from-the-log")
    assert (rec.exists, rec.value, rec.certificate_hash) == (True, 77, CERT)
    (ev,) = chain.recorded_events()
    assert (ev.tx_id, ev.submitter, ev.tx_hash) == ("from-the-log", sub.address, tx_hash)


def test_fresh_chain_looks_like_a_fresh_anvil_after_the_deployment():
    chain, _ = _chain()
    assert chain.address == "0x5FbDB2315678afecb367f032d93F642f64180aa3"  # anvil's first deployment by account 0
    assert chain.block_number() == 1 and chain.pending_nonce(OWNER.address) == 1
    assert chain.suggest_fees() == Fees(3_000_000_000, 1_000_000_000)
    assert chain.owner() == OWNER.address and chain.record_count() == 0


def test_an_outage_for_a_while_then_back():
    chain, sub = _chain()
    signed = chain.sign_record(sub, "tx-o", 1, CERT, nonce=0, fees=chain.suggest_fees())
    chain.down_for(0.2)
    assert not chain.reachable
    with pytest.raises(ChainUnreachable):
        chain.send_raw(signed.raw)
    with pytest.raises(ChainUnreachable):
        chain.block_number()
    time.sleep(0.25)
    assert chain.reachable
    chain.send_raw(signed.raw)
    assert chain.record_of("tx-o").exists
    chain.go_down()
    with pytest.raises(ChainUnreachable):
        chain.record_of("tx-o")
    chain.come_up()
    assert chain.record_count() == 1


def test_a_lost_send_reaches_nothing_and_can_be_sent_again():
    chain, sub = _chain()
    signed = chain.sign_record(sub, "tx-l", 1, CERT, nonce=0, fees=chain.suggest_fees())
    chain.lose_next_sends()
    assert chain.send_raw(signed.raw) == signed.tx_hash  # the caller believes it went out
    assert chain.get_transaction(signed.tx_hash) is None and chain.pending_nonce(sub.address) == 0
    assert chain.sent == []
    chain.send_raw(signed.raw)  # a re-broadcast of the logged bytes
    assert chain.get_receipt(signed.tx_hash)["status"] == 1 and chain.sent == [signed.tx_hash]


def test_a_lost_reply_the_pool_took_it_anyway():
    chain, sub = _chain()
    chain.set_automine(False)
    signed = chain.sign_record(sub, "tx-r", 1, CERT, nonce=0, fees=chain.suggest_fees())
    chain.lose_next_replies()
    with pytest.raises(ChainUnreachable):
        chain.send_raw(signed.raw)
    with pytest.raises(AlreadyKnown):
        chain.send_raw(signed.raw)
    assert chain.pending() == [signed.tx_hash]
    chain.mine()
    with pytest.raises(NonceTooLow):
        chain.send_raw(signed.raw)
    assert chain.record_of("tx-r").exists


def test_dropped_pool_and_a_base_fee_that_ran_ahead():
    chain, sub = _chain(automine=False)
    fees = chain.suggest_fees()
    a = chain.sign_record(sub, "tx-a", 1, CERT, nonce=0, fees=fees)
    chain.send_raw(a.raw)
    assert chain.drop_pending() == 1
    assert chain.get_transaction(a.tx_hash) is None and chain.pending_nonce(sub.address) == 0
    chain.send_raw(a.raw)  # the node forgot it: the logged bytes go in again
    assert chain.sent == [a.tx_hash, a.tx_hash]
    chain.set_base_fee(4 * fees.max_fee_per_gas)  # the pending transaction can no longer be mined
    chain.mine()
    assert chain.get_receipt(a.tx_hash) is None and chain.get_transaction(a.tx_hash) is not None
    with pytest.raises(FeeTooLow):
        chain.send_raw(chain.sign_record(sub, "tx-b", 1, CERT, nonce=1, fees=fees).raw)
    bumped = chain.sign_record(sub, "tx-a", 1, CERT, nonce=0, fees=chain.suggest_fees())
    chain.send_raw(bumped.raw)
    chain.mine()
    assert chain.get_receipt(bumped.tx_hash)["status"] == 1 and chain.get_transaction(a.tx_hash) is None


def test_waiting_for_a_receipt_wakes_when_another_thread_mines():
    chain, sub = _chain(automine=False)
    signed = chain.sign_record(sub, "tx-w", 1, CERT, nonce=0, fees=chain.suggest_fees())
    chain.send_raw(signed.raw)
    timer = threading.Timer(0.1, chain.mine)
    timer.start()
    started = time.monotonic()
    assert chain.wait_for_receipt(signed.tx_hash, timeout=5).block_number == 2
    assert time.monotonic() - started < 2
    timer.join()


def test_gas_is_charged_and_a_plain_transfer_moves_value():
    chain, sub = _chain()
    before = chain.balance(sub.address)
    fees = chain.suggest_fees()
    mined = chain.wait_for_receipt(chain.send_raw(
        chain.sign_record(sub, "tx-g", 1, CERT, nonce=0, fees=fees).raw), timeout=1)
    receipt = chain.get_receipt(mined.tx_hash)
    assert chain.balance(sub.address) == before - mined.gas_used * receipt["effectiveGasPrice"]
    other = Account.create()
    transfer = sub.sign_transaction({"type": 2, "chainId": chain.chain_id, "nonce": 1, "to": other.address,
                                     "value": 5, "gas": 21_000, "maxFeePerGas": fees.max_fee_per_gas,
                                     "maxPriorityFeePerGas": fees.max_priority_fee_per_gas})
    h = chain.send_raw(bytes(transfer.raw_transaction))
    assert chain.get_receipt(h)["status"] == 1 and chain.balance(other.address) == chain.default_balance + 5
    assert chain.mined_nonce(sub.address) == 2 and chain.record_count() == 1
