"""Fixtures for the chain tests: a REAL anvil (from npm @foundry-rs/anvil), never a mock.

A missing anvil fails the tests with the fix in the message; nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain import ThresholdRecordClient, make_web3
from devstack.anvil import DEFAULT_CHAIN_ID, Anvil, AnvilError, find_anvil


@pytest.fixture(scope="session")
def anvil_binary() -> str:
    try:
        return str(find_anvil())
    except AnvilError as exc:
        pytest.fail(f"chain tests need the real anvil: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def anvil(anvil_binary: str) -> Iterator[Anvil]:
    """One automining anvil shared by the session (each test deploys its own contract)."""
    with Anvil(binary=anvil_binary) as node:
        yield node


@pytest.fixture
def make_anvil(anvil_binary: str) -> Iterator[Callable[..., Anvil]]:
    """Factory for extra anvils a test wants to stop, kill or run without mining; all closed after."""
    nodes: list[Anvil] = []

    def _make(**kwargs: Any) -> Anvil:
        node = Anvil(binary=anvil_binary, **kwargs)
        nodes.append(node)
        node.start()
        return node

    yield _make
    for node in nodes:
        node.close()


@pytest.fixture(scope="session")
def w3(anvil: Anvil) -> Web3:
    return make_web3(anvil.url)


@pytest.fixture(scope="session")
def owner(anvil: Anvil) -> LocalAccount:
    return Account.from_key(anvil.private_key(0))


@pytest.fixture(scope="session")
def submitter(anvil: Anvil) -> LocalAccount:
    return Account.from_key(anvil.private_key(1))


@pytest.fixture(scope="session")
def outsider(anvil: Anvil) -> LocalAccount:
    """Funded, but never authorised as a submitter."""
    return Account.from_key(anvil.private_key(2))


@pytest.fixture
def client(w3: Web3, owner: LocalAccount, submitter: LocalAccount) -> ThresholdRecordClient:
    """A freshly deployed contract with `submitter` authorised."""
    return ThresholdRecordClient.deploy(w3, owner, [submitter.address], chain_id=DEFAULT_CHAIN_ID)


def deploy_on(node: Anvil) -> tuple[ThresholdRecordClient, LocalAccount, LocalAccount]:
    """Deploy on another anvil; returns (client, owner, submitter)."""
    owner = Account.from_key(node.private_key(0))
    sub = Account.from_key(node.private_key(1))
    client = ThresholdRecordClient.deploy(make_web3(node.url), owner, [sub.address], chain_id=node.chain_id)
    return client, owner, sub


@pytest.fixture
def deploy() -> Callable[[Anvil], tuple[ThresholdRecordClient, LocalAccount, LocalAccount]]:
    return deploy_on
