"""TrusteeNode.wait_recorded: a POST /votes answers 202 once our votes are in the log, woken by their acceptance.

The API thread is woken when the log accepts our vote on a transaction it waits for, not at every move of the
log (a hundred waiting requests woken ~50 times a second each was the herd this replaced, issue 15).
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import bootstrap, run, unstarted_node

from events import rules
from events.vote import Vote, sign


@pytest.fixture
def node(tmp_path):
    ledger, ts = bootstrap(4, 3)
    return unstarted_node(tmp_path, ledger), ledger, ts


def accept(node, ledger, t, tx: str, value: int = 1) -> None:
    """What the worker does when it reads (or appends) a vote: the ledger first, then the events."""
    for e in run(ledger, rules.ReceiveVote(sign(Vote(tx, value, t.node_id, 1), t.key), t.peer_id, 1000)):
        node._on_event(e)


def ours(ts, tx: str, value: int = 1):
    return sign(Vote(tx, value, ts[0].node_id, 1), ts[0].key)


def test_a_vote_already_in_the_log_answers_at_once_and_leaves_no_waiter(node) -> None:
    n, ledger, ts = node
    accept(n, ledger, ts[0], "tx-a")
    assert n.wait_recorded([ours(ts, "tx-a")], timeout=5.0)
    assert n._waiters == {}


def test_a_vote_not_in_the_log_times_out_and_leaves_no_waiter(node) -> None:
    n, _, ts = node
    assert not n.wait_recorded([ours(ts, "tx-a")], timeout=0.2)
    assert n._waiters == {}


def test_the_acceptance_of_our_vote_wakes_the_waiter(node) -> None:
    n, ledger, ts = node
    done: list[tuple[bool, float]] = []

    def wait() -> None:
        t0 = time.monotonic()
        ok = n.wait_recorded([ours(ts, "tx-a"), ours(ts, "tx-b")], timeout=30.0)
        done.append((ok, time.monotonic() - t0))

    th = threading.Thread(target=wait)
    th.start()
    while set(n._waiters) != {"tx-a", "tx-b"}:
        time.sleep(0.01)
    accept(n, ledger, ts[1], "tx-a")  # another member's vote there: not ours, the wait goes on
    accept(n, ledger, ts[0], "tx-a")
    accept(n, ledger, ts[0], "tx-b")
    t_accepted = time.monotonic()
    th.join(10)
    assert done and done[0][0]
    # woken by the event, not by the 1 s re-check (generous for a loaded machine, far under 30 s)
    assert time.monotonic() - t_accepted < 0.9
    assert n._waiters == {}


def test_other_acceptances_do_not_end_the_wait(node) -> None:
    n, ledger, ts = node
    result: list[bool] = []
    th = threading.Thread(target=lambda: result.append(n.wait_recorded([ours(ts, "tx-a")], timeout=1.5)))
    th.start()
    while "tx-a" not in n._waiters:
        time.sleep(0.01)
    accept(n, ledger, ts[1], "tx-a")  # a member's vote on our transaction
    accept(n, ledger, ts[0], "tx-z")  # our vote on another transaction
    th.join(10)
    assert result == [False]
    assert n._waiters == {}
