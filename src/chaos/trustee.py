"""Misbehaving and lossy trustees for tests, driven from outside the production node.

raft keeps its misbehaving test nodes in ``rafttest/``, never in the library; this is ours. The
production ``tvote node`` has no test-only options and its API's 202 depends on the log alone.
A test harness runs instead::

    python -m chaos.trustee --mode double [--drop-rate 0.2] -- <the same options as `tvote node`>

which starts a real trustee (``node.runner``) and then adapts it from outside:

- ``--mode`` replaces how it signs and publishes what its API is asked to cast:
  ``double`` signs the value and value+1 (R4), ``minority`` signs value+1 (R5), ``forge`` sends
  the honest vote plus a vote in another member's name signed with its own key (R7), ``silent``
  signs nothing (R9), ``flood`` also floods the topic with garbage (seed section 15: DoS);
- ``die-worker`` / ``die-gossip`` kill the node's worker thread or its gossip (Trio) thread a few seconds
  after start, as a bug would: the process must notice, log the cause and exit non-zero;
- ``--drop-rate`` drops that fraction of accepted gossip deliveries, as lost packets would
  (``tc netem`` is not available here; the loss is injected above the kernel).

A Byzantine trustee signs with its key directly, past the signing journal an honest node keeps
(R14), and its API answers at once: what it sends is not what an honest node would record.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from typing import Any

from events.vote import SignedVote, Vote, sign
from node.service import TrusteeNode
from recording.recorder import now_ms

MODES = ("none", "double", "minority", "forge", "silent", "flood", "die-worker", "die-gossip")
DIE_AFTER_S = 3.0  # "die-*": a thread of the node dies this long after it started (health tests)
FLOOD_RATE = 2000  # garbage gossip messages/s sent in "flood" mode


class Misbehaving:
    """What the API serves for a Byzantine trustee: the node, with another way to cast."""

    def __init__(self, node: TrusteeNode, mode: str) -> None:
        self.node, self.mode = node, mode

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)

    def cast(self, tx_id: str, value: int) -> list[SignedVote]:
        return self.cast_many([(tx_id, value)])

    def cast_many(self, ballots: list[tuple[str, int]]) -> list[SignedVote]:
        node, mode = self.node, self.mode
        node.check_eligible()
        key, me = node.signing_key, node.cfg.node_id
        members = sorted(node.recorder.ledger.cluster.members)
        victim = next((n for n in members if n != me), None)
        mine: list[SignedVote] = []
        forged: list[SignedVote] = []
        for tx_id, value in ballots:
            if mode != "silent":
                mine.append(sign(Vote(tx_id, value + (1 if mode == "minority" else 0), me, now_ms()), key))
            if mode == "double":
                mine.append(sign(Vote(tx_id, value + 1, me, now_ms()), key))
            if mode == "forge" and victim is not None:
                v = Vote(tx_id, value + 1, victim, now_ms())
                forged.append(SignedVote(v, sign(v, key).signature))  # our key, their name (R7)
        node.send(mine)
        node.send(forged, record=False)
        return mine

    def wait_recorded(self, votes: list[SignedVote], timeout: float) -> bool:
        if self.mode == "minority":  # a minority vote is recorded like any vote (and then banned)
            return self.node.wait_recorded(votes, timeout)
        return True  # the other modes cast what no node records whole: answer at once


def lossy(node: TrusteeNode, rate: float) -> None:
    """Drop ``rate`` of the gossip deliveries the node's host accepted, before the node sees them."""
    deliver = node._deliver

    def dropping_deliver(author: str, payload: bytes) -> None:
        if random.random() >= rate:
            deliver(author, payload)
        else:
            node.counters.add("fault_dropped_messages")

    node._deliver = dropping_deliver  # type: ignore[method-assign]


def flood(node: TrusteeNode) -> None:
    """A member peer that floods the topic with invalid batches (garbage never bans its author)."""

    def run() -> None:
        n = 0
        while node.healthy:
            node.gossip.publish(b'{"v":1,"votes":[{"flood":%d}]}' % n, block=False)
            n += 1
            node.counters.add("flood_sent")
            time.sleep(1 / FLOOD_RATE)

    threading.Thread(target=run, name="flood", daemon=True).start()


def die_later(node: TrusteeNode, which: str) -> None:
    """A thread of the node dies as an unexpected exception would kill it (not a clean stop)."""

    def boom(*_: Any) -> None:
        raise RuntimeError(f"chaos: the {which} thread dies")

    def later() -> None:
        time.sleep(DIE_AFTER_S)
        if which == "worker":
            node._tick_deadlines = boom  # type: ignore[method-assign]  # raised inside the worker's loop
        else:  # a failing system task crashes the whole trio.run: the Trio thread ends with an error
            import trio

            async def crash() -> None:
                boom()

            trio.from_thread.run_sync(trio.lowlevel.spawn_system_task, crash, trio_token=node.gossip._token)

    threading.Thread(target=later, daemon=True).start()


def adapter(mode: str, drop_rate: float) -> Any:
    def adapt(node: TrusteeNode) -> Any:
        if drop_rate:
            lossy(node, drop_rate)
        if mode == "flood":
            flood(node)
        if mode.startswith("die-"):
            die_later(node, mode.removeprefix("die-"))
            return node
        return node if mode in ("none", "flood") else Misbehaving(node, mode)

    return adapt


def main(argv: list[str]) -> None:
    mode, drop_rate = "none", 0.0
    rest = list(argv)
    while rest and rest[0] != "--":
        opt = rest.pop(0)
        if opt == "--mode" and rest:
            mode = rest.pop(0)
        elif opt == "--drop-rate" and rest:
            drop_rate = float(rest.pop(0))
        else:
            modes = "|".join(MODES)
            sys.exit(f"usage: python -m chaos.trustee [--mode {modes}] [--drop-rate R] -- <tvote node options>")
    if mode not in MODES or not 0.0 <= drop_rate <= 1.0:
        sys.exit(f"--mode must be one of {', '.join(MODES)} and --drop-rate in 0..1")
    from node import runner
    from tvote.cli import app

    runner.ADAPT = adapter(mode, drop_rate)
    app(["node", *rest[1:]])


if __name__ == "__main__":
    main(sys.argv[1:])
