"""ThresholdRecord + chain client against a REAL anvil (issue 6, R11: at most one write per tx id)."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import blake3
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractCustomError

from chain import (
    RECORD_GAS,
    AlreadyKnown,
    AlreadyRecorded,
    BadInput,
    ChainUnreachable,
    ContractMismatch,
    Fees,
    FeeTooLow,
    InsufficientFunds,
    InvalidTxId,
    NonceTooLow,
    NotOwner,
    NotSubmitter,
    ReceiptTimeout,
    ReplacementUnderpriced,
    ThresholdRecordClient,
    WrongChainId,
    load_artifact,
    tx_id_hash,
)
from devstack.anvil import DEFAULT_CHAIN_ID, Anvil, AnvilError, find_anvil, rpc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CERT = blake3.blake3(b"t signed votes, canonically encoded").digest()  # as ThresholdReached.certificate_hash
OTHER_CERT = blake3.blake3(b"some other certificate").digest()

Deploy = Callable[[Anvil], tuple[ThresholdRecordClient, LocalAccount, LocalAccount]]


def _module(name: str, path: Path) -> ModuleType:
    """A script outside the packages (contracts/build.py, a bench helper) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_module() -> ModuleType:
    return _module("contracts_build", REPO / "contracts" / "build.py")


def _mine(node: Anvil, blocks: int = 1) -> None:
    for _ in range(blocks):
        rpc(node.url, "evm_mine")


# -- artifact ----------------------------------------------------------------------------------------


def test_committed_artifact_matches_fresh_compile_of_source() -> None:
    build = _build_module()
    fresh = build.compile_artifact()
    committed = json.loads((REPO / "contracts" / "ThresholdRecord.json").read_text())
    assert fresh["compiler"]["version"].startswith("0.8.37+")
    assert committed["sourceSha256"] == fresh["sourceSha256"], "source changed: run python contracts/build.py"
    assert committed["bytecode"] == fresh["bytecode"]
    assert committed["deployedBytecode"] == fresh["deployedBytecode"]
    assert committed["abi"] == fresh["abi"]
    assert build.render(fresh) == (REPO / "contracts" / "ThresholdRecord.json").read_text()


def test_deployed_code_is_the_artifact(client: ThresholdRecordClient, w3: Web3) -> None:
    assert "0x" + bytes(w3.eth.get_code(client.address)).hex() == load_artifact()["deployedBytecode"]


# -- writing once -------------------------------------------------------------------------------------


def test_record_once_then_second_write_reverts_already_recorded(
    client: ThresholdRecordClient, submitter: LocalAccount
) -> None:
    assert client.record_of("tx-1").exists is False
    mined = client.record(submitter, "tx-1", 42, CERT)

    rec = client.record_of("tx-1")
    assert (rec.exists, rec.value, rec.certificate_hash, rec.block_number) == (
        True,
        42,
        CERT,
        mined.block_number,
    )
    assert client.record_count() == 1
    events = client.recorded_events("tx-1")
    assert len(events) == 1
    ev = events[0]
    assert (ev.tx_id, ev.value, ev.certificate_hash, ev.submitter) == ("tx-1", 42, CERT, submitter.address)
    assert ev.tx_id_hash == tx_id_hash("tx-1") and ev.tx_hash == mined.tx_hash

    # A different value: the chain keeps the first and says what it holds.
    with pytest.raises(AlreadyRecorded) as err:
        client.record(submitter, "tx-1", 7, OTHER_CERT)
    assert (err.value.tx_id, err.value.value, err.value.certificate_hash) == ("tx-1", 42, CERT)
    assert not err.value.matches(7, OTHER_CERT)
    assert err.value.receipt is not None and err.value.receipt["status"] == 0

    # The same value again (a retried submission): still refused, and recognisably ours.
    with pytest.raises(AlreadyRecorded) as err:
        client.record(submitter, "tx-1", 42, CERT)
    assert err.value.matches(42, CERT)

    with pytest.raises(AlreadyRecorded):
        client.preflight(submitter.address, "tx-1", 42, CERT)

    assert client.count_recorded("tx-1") == 1
    assert client.record_count() == 1
    assert client.record_of("tx-1").value == 42


def test_two_writes_for_one_id_in_the_same_block_only_first_succeeds(
    make_anvil: Callable[..., Anvil], deploy: Deploy
) -> None:
    node = make_anvil(no_mining=True)
    client, _, sub = deploy_mined(node, deploy)
    nonce = client.pending_nonce(sub.address)
    fees = client.suggest_fees()
    first = client.sign_record(sub, "same-block", 1, CERT, nonce=nonce, fees=fees)
    second = client.sign_record(sub, "same-block", 2, OTHER_CERT, nonce=nonce + 1, fees=fees)
    client.send_raw(first.raw)
    client.send_raw(second.raw)
    _mine(node)
    assert (
        client.wait_for_receipt(first.tx_hash).block_number
        == client.get_receipt(second.tx_hash)["blockNumber"]
    )
    with pytest.raises(AlreadyRecorded) as err:
        client.wait_for_receipt(second.tx_hash)
    assert err.value.matches(1, CERT)
    assert client.count_recorded("same-block") == 1


def deploy_mined(node: Anvil, deploy: Deploy) -> tuple[ThresholdRecordClient, LocalAccount, LocalAccount]:
    """Deploy on a --no-mining anvil: mine the deployment block while deploy() waits."""
    stop = threading.Event()

    def miner() -> None:
        while not stop.is_set():
            _mine(node)
            time.sleep(0.05)

    thread = threading.Thread(target=miner, daemon=True)
    thread.start()
    try:
        return deploy(node)
    finally:
        stop.set()
        thread.join()


def test_events_are_counted_per_tx_id(client: ThresholdRecordClient, submitter: LocalAccount) -> None:
    for i, tx_id in enumerate(["a", "b", "c"]):
        client.record(submitter, tx_id, i, CERT)
    with pytest.raises(AlreadyRecorded):
        client.record(submitter, "b", 1, CERT)
    assert [client.count_recorded(t) for t in ("a", "b", "c", "d")] == [1, 1, 1, 0]
    assert [e.tx_id for e in client.recorded_events()] == ["a", "b", "c"]
    assert client.record_count() == 3


def test_longest_valid_tx_id_fits_in_the_signed_gas(
    client: ThresholdRecordClient, submitter: LocalAccount
) -> None:
    tx_id = "A-z0.9:_" * 16
    assert len(tx_id) == 128
    mined = client.record(submitter, tx_id, 2**64 - 1, CERT)  # the contract's first record: costliest
    assert mined.gas_used < 0.8 * RECORD_GAS
    assert client.record_of(tx_id).value == 2**64 - 1


# -- who may write ------------------------------------------------------------------------------------


def test_unauthorised_sender_reverts_and_nothing_is_written(
    client: ThresholdRecordClient, outsider: LocalAccount
) -> None:
    with pytest.raises(NotSubmitter) as err:
        client.preflight(outsider.address, "tx-x", 1, CERT)
    assert err.value.caller == outsider.address
    with pytest.raises(NotSubmitter):
        client.record(outsider, "tx-x", 1, CERT)
    assert client.record_of("tx-x").exists is False
    assert client.count_recorded("tx-x") == 0
    assert client.record_count() == 0


def test_owner_authorises_and_deauthorises_submitters(
    client: ThresholdRecordClient, owner: LocalAccount, submitter: LocalAccount, outsider: LocalAccount
) -> None:
    assert client.owner() == owner.address
    with pytest.raises(NotOwner):
        client.set_submitter(outsider, outsider.address, True)
    assert not client.is_submitter(outsider.address)

    client.set_submitter(owner, outsider.address, True)
    assert client.is_submitter(outsider.address)
    client.record(outsider, "by-outsider", 5, CERT)

    client.set_submitter(owner, submitter.address, False)
    with pytest.raises(NotSubmitter):
        client.record(submitter, "by-deauthorised", 5, CERT)
    assert client.count_recorded("by-deauthorised") == 0


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tx_id", "value", "cert"),
    [
        ("", 1, CERT),
        ("x" * 129, 1, CERT),
        ("tx 1", 1, CERT),
        ("tx/1", 1, CERT),
        ("tx-é", 1, CERT),
        ("tx-1", -1, CERT),
        ("tx-1", 2**64, CERT),
        ("tx-1", True, CERT),
        ("tx-1", 1, CERT[:31]),
    ],
)
def test_bad_input_is_refused_before_signing(
    client: ThresholdRecordClient, submitter: LocalAccount, tx_id: str, value: int, cert: bytes
) -> None:
    nonce = client.pending_nonce(submitter.address)
    with pytest.raises(BadInput):
        client.sign_record(submitter, tx_id, value, cert, nonce=nonce, fees=client.suggest_fees())
    with pytest.raises(BadInput):
        client.record(submitter, tx_id, value, cert)
    assert client.pending_nonce(submitter.address) == nonce


@pytest.mark.parametrize("tx_id", ["", "x" * 129, "tx 1", "tx\x00"])
def test_contract_itself_refuses_invalid_tx_ids(
    client: ThresholdRecordClient, submitter: LocalAccount, tx_id: str
) -> None:
    """The last line: even a client that skips validation cannot store a non-R2 id."""
    with pytest.raises(ContractCustomError) as err:
        client.contract.functions.record(tx_id, 1, CERT).call({"from": submitter.address})
    decoded = client.decode_revert(err.value.data)
    assert isinstance(decoded, InvalidTxId) and decoded.tx_id == tx_id


# -- signing is pure, and what is logged is what is sent (R11) ------------------------------------------


def test_signed_record_is_self_consistent_and_not_sent(
    client: ThresholdRecordClient, submitter: LocalAccount
) -> None:
    nonce = client.pending_nonce(submitter.address)
    fees = Fees(max_fee_per_gas=5_000_000_000, max_priority_fee_per_gas=1_000_000_000)
    signed = client.sign_record(submitter, "tx-s", 9, CERT, nonce=nonce, fees=fees)
    assert signed.tx_hash == keccak(signed.raw)
    assert Account.recover_transaction(signed.raw) == submitter.address
    fields = TypedTransaction.from_bytes(HexBytes(signed.raw)).as_dict()
    assert (fields["nonce"], fields["chainId"], fields["gas"]) == (nonce, DEFAULT_CHAIN_ID, signed.gas)
    assert (fields["maxFeePerGas"], fields["maxPriorityFeePerGas"]) == (5_000_000_000, 1_000_000_000)
    # Signing alone touched nothing: recovery would find neither transaction nor receipt.
    assert client.get_transaction(signed.tx_hash) is None
    assert client.get_receipt(signed.tx_hash) is None
    assert client.pending_nonce(submitter.address) == nonce


def test_recovery_rebroadcast_of_a_mined_tx_is_nonce_too_low_and_lookup_finds_it(
    client: ThresholdRecordClient, submitter: LocalAccount
) -> None:
    signed = client.sign_record(
        submitter, "tx-r", 3, CERT, nonce=client.pending_nonce(submitter.address), fees=client.suggest_fees()
    )
    assert client.send_raw(signed.raw) == signed.tx_hash
    client.wait_for_receipt(signed.tx_hash)
    # A crash after broadcast: recovery re-broadcasts the logged bytes...
    with pytest.raises(NonceTooLow):
        client.send_raw(signed.raw)
    # ...and looks the logged hash up instead of signing again.
    receipt = client.get_receipt(signed.tx_hash)
    assert receipt is not None and receipt["status"] == 1
    assert client.count_recorded("tx-r") == 1


# -- error classification ----------------------------------------------------------------------------


def test_nonce_too_low_for_a_different_tx_at_a_used_nonce(
    client: ThresholdRecordClient, submitter: LocalAccount
) -> None:
    nonce = client.pending_nonce(submitter.address)
    client.record(submitter, "tx-n1", 1, CERT, nonce=nonce)
    late = client.sign_record(submitter, "tx-n2", 1, CERT, nonce=nonce, fees=client.suggest_fees())
    with pytest.raises(NonceTooLow) as err:
        client.send_raw(late.raw)
    assert "nonce too low" in err.value.rpc_message
    assert client.count_recorded("tx-n2") == 0


def test_already_known_replacement_underpriced_and_bumped_replacement(
    make_anvil: Callable[..., Anvil], deploy: Deploy
) -> None:
    node = make_anvil(no_mining=True)
    client, _, sub = deploy_mined(node, deploy)
    nonce = client.pending_nonce(sub.address)
    fees = client.suggest_fees()
    first = client.sign_record(sub, "tx-p", 1, CERT, nonce=nonce, fees=fees)
    client.send_raw(first.raw)

    with pytest.raises(AlreadyKnown):
        client.send_raw(first.raw)

    same_fee = client.sign_record(sub, "tx-p", 1, CERT, nonce=nonce, fees=fees, gas=210_000)
    with pytest.raises(ReplacementUnderpriced):
        client.send_raw(same_fee.raw)

    with pytest.raises(ReceiptTimeout):
        client.wait_for_receipt(first.tx_hash, timeout=0.3)

    # A stuck transaction is replaced at the same nonce with a higher fee: only one can be mined.
    bumped = client.sign_record(sub, "tx-p", 1, CERT, nonce=nonce, fees=fees.bumped())
    client.send_raw(bumped.raw)
    _mine(node)
    assert client.wait_for_receipt(bumped.tx_hash).block_number > 0
    assert client.get_receipt(first.tx_hash) is None
    assert client.count_recorded("tx-p") == 1
    with pytest.raises(NonceTooLow):
        client.send_raw(first.raw)


def test_insufficient_funds(client: ThresholdRecordClient, owner: LocalAccount) -> None:
    poor = Account.from_key(keccak(b"threshold-vote test: an unfunded submitter"))
    client.set_submitter(owner, poor.address, True)
    signed = client.sign_record(poor, "tx-f", 1, CERT, nonce=0, fees=client.suggest_fees())
    with pytest.raises(InsufficientFunds):
        client.send_raw(signed.raw)
    assert client.count_recorded("tx-f") == 0


def test_fee_below_base_fee(client: ThresholdRecordClient, submitter: LocalAccount) -> None:
    signed = client.sign_record(
        submitter, "tx-lowfee", 1, CERT, nonce=client.pending_nonce(submitter.address), fees=Fees(1, 1)
    )
    with pytest.raises(FeeTooLow):
        client.send_raw(signed.raw)


def test_wrong_chain_id_is_refused(
    anvil: Anvil, client: ThresholdRecordClient, submitter: LocalAccount
) -> None:
    with pytest.raises(WrongChainId) as err:
        ThresholdRecordClient.connect(anvil.url, client.address, chain_id=1)
    assert (err.value.expected, err.value.actual) == (1, DEFAULT_CHAIN_ID)

    misconfigured = ThresholdRecordClient(client.w3, client.address, chain_id=1, verify=False)
    signed = misconfigured.sign_record(
        submitter, "tx-c", 1, CERT, nonce=client.pending_nonce(submitter.address), fees=client.suggest_fees()
    )
    with pytest.raises(WrongChainId):
        client.send_raw(signed.raw)
    assert client.count_recorded("tx-c") == 0


def test_chain_unreachable(make_anvil: Callable[..., Anvil], deploy: Deploy) -> None:
    node = make_anvil()
    client, _, sub = deploy(node)
    signed = client.sign_record(
        sub, "tx-u", 1, CERT, nonce=client.pending_nonce(sub.address), fees=client.suggest_fees()
    )
    node.stop()
    started = time.monotonic()
    with pytest.raises(ChainUnreachable):
        client.send_raw(signed.raw)
    with pytest.raises(ChainUnreachable):
        client.record_of("tx-u")
    with pytest.raises(ChainUnreachable):
        client.wait_for_receipt(signed.tx_hash, timeout=1)
    with pytest.raises(ChainUnreachable):
        ThresholdRecordClient.connect(node.url, client.address, chain_id=DEFAULT_CHAIN_ID)
    assert time.monotonic() - started < 5, "unreachable must be reported at once, not retried silently"


def test_confirmations_wait_for_blocks_on_top(
    anvil: Anvil, client: ThresholdRecordClient, submitter: LocalAccount
) -> None:
    signed = client.sign_record(
        submitter, "tx-k", 1, CERT, nonce=client.pending_nonce(submitter.address), fees=client.suggest_fees()
    )
    client.send_raw(signed.raw)
    with pytest.raises(ReceiptTimeout):
        client.wait_for_receipt(signed.tx_hash, confirmations=2, timeout=0.3)
    _mine(anvil, 2)
    assert client.wait_for_receipt(signed.tx_hash, confirmations=2).confirmations >= 2


# -- anvil: restart with state, teardown ------------------------------------------------------------


def test_restart_with_state_keeps_the_record(
    make_anvil: Callable[..., Anvil], deploy: Deploy, tmp_path: Path
) -> None:
    state = tmp_path / "anvil-state.json"
    node = make_anvil(state_path=state, state_interval=1)
    url = node.url
    client, _, sub = deploy(node)
    client.record(sub, "kept", 11, CERT)

    node.stop()  # clean stop: anvil writes the state file
    assert state.is_file()
    assert node.start() == url
    rec = client.record_of("kept")
    assert (rec.exists, rec.value, rec.certificate_hash) == (True, 11, CERT)
    assert client.count_recorded("kept") == 1
    with pytest.raises(AlreadyRecorded):
        client.record(sub, "kept", 11, CERT)

    # A crash (SIGKILL): what the periodic dump had written survives.
    client.record(sub, "after-restart", 12, CERT)
    time.sleep(2.5)
    node.kill()
    node.start()
    assert client.record_of("after-restart").value == 12
    assert client.count_recorded("kept") == 1
    assert client.count_recorded("after-restart") == 1
    assert client.record_count() == 2


def test_block_time_mode_mines_without_automine(make_anvil: Callable[..., Anvil], deploy: Deploy) -> None:
    node = make_anvil(block_time=1)
    client, _, sub = deploy(node)
    started = time.monotonic()
    client.record(sub, "timed", 1, CERT, timeout=10)
    assert time.monotonic() - started < 5
    assert client.count_recorded("timed") == 1


def test_stop_leaves_no_process(anvil_binary: str) -> None:
    with Anvil(binary=anvil_binary) as node:
        pid = node.pid
        assert pid is not None and node.running
        assert int(str(rpc(node.url, "eth_chainId")), 16) == DEFAULT_CHAIN_ID
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not node.running


def test_dev_accounts_are_deterministic(anvil: Anvil, w3: Web3) -> None:
    expected = [Account.from_key(anvil.private_key(i)).address for i in range(3)]
    assert [Web3.to_checksum_address(a) for a in w3.eth.accounts[:3]] == expected


def test_missing_anvil_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANVIL_BIN", str(tmp_path / "no-anvil-here"))
    with pytest.raises(AnvilError, match="ANVIL_BIN"):
        find_anvil()
    monkeypatch.delenv("ANVIL_BIN")
    assert find_anvil().is_file()


def test_anvil_that_cannot_start_is_a_clear_error(anvil_binary: str) -> None:
    node = Anvil(binary=anvil_binary, extra_args=["--no-such-flag"])
    with pytest.raises(AnvilError, match="exited with code"):
        node.start()
    node.close()
    assert not node.running




def test_misconfigured_contract_address_is_refused(
    anvil: Anvil, client: ThresholdRecordClient, owner: LocalAccount
) -> None:
    with pytest.raises(ContractMismatch, match="no contract"):
        ThresholdRecordClient.connect(anvil.url, "0x" + "11" * 20, chain_id=DEFAULT_CHAIN_ID)
    with pytest.raises(ContractMismatch, match="not this ThresholdRecord"):
        ThresholdRecordClient.connect(
            anvil.url, client.address, chain_id=DEFAULT_CHAIN_ID, artifact=_other_artifact()
        )
    assert (
        ThresholdRecordClient.connect(anvil.url, client.address, chain_id=DEFAULT_CHAIN_ID).owner()
        == owner.address
    )


def _other_artifact() -> dict[str, object]:
    art = dict(load_artifact())
    art["deployedBytecode"] = str(art["deployedBytecode"])[:-2] + "00"
    return art


def test_baseline_loop_runs(anvil: Anvil) -> None:
    """The bare send-and-wait loop later benchmarks compare against (python bench/chain_baseline.py)."""
    baseline = _module("chain_baseline", REPO / "bench" / "chain_baseline.py")
    for mode in ("bare", "client"):
        result = baseline.measure(anvil.url, 5, mode)
        assert result["mode"] == mode and result["count"] == 5 and result["tx_per_s"] > 0
