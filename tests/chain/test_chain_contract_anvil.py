"""The chain port's contract (tests/chain_contract.py) against the JSON-RPC adapter on a REAL anvil."""

from __future__ import annotations

import socket

import pytest
from chain_contract import ChainContract, Rig
from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain import ThresholdRecordClient, make_web3
from devstack.anvil import Anvil, rpc

pytestmark = pytest.mark.integration


def _dead_url() -> str:
    """A loopback URL nothing listens on: connection refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class TestChainContractAnvil(ChainContract):
    """Each test deploys its own contract on the session's anvil, with fresh accounts (a test may leave
    transactions in the pool that no other test must trip over); automine is back on after each test."""

    @pytest.fixture(autouse=True)
    def _on_anvil(self, anvil: Anvil, owner: LocalAccount):
        self.node, self.owner = anvil, owner
        yield
        rpc(anvil.url, "evm_setAutomine", [True])

    def make_rig(self) -> Rig:
        url = self.node.url
        submitter, outsider, poor = Account.create(), Account.create(), Account.create()
        for funded in (submitter, outsider):
            rpc(url, "anvil_setBalance", [funded.address, hex(10**20)])
        client = ThresholdRecordClient.deploy(make_web3(url), self.owner, [submitter.address, poor.address],
                                              chain_id=self.node.chain_id)

        def set_automine(on: bool) -> None:
            rpc(url, "evm_setAutomine", [on])

        def mine(blocks: int) -> None:
            for _ in range(blocks):
                rpc(url, "evm_mine")

        def unreachable() -> ThresholdRecordClient:
            return ThresholdRecordClient(make_web3(_dead_url(), timeout=2), client.address,
                                         chain_id=client.chain_id, artifact=client.artifact, verify=False)

        return Rig(client, submitter, outsider, poor, set_automine, mine, unreachable)
