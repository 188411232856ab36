"""Who records a transaction's votes first, and when the others step in (R13, scheduled).

R13 has every node that receives a valid vote try to record it, with the etcd claim on
``/votes/<tx>/<node>`` choosing one. Done literally, all N nodes race for every vote: N etcd
transactions per vote, and N writers on one transaction's stream head, so almost every batch
conflicts, is decided again and defers (measured: N=4, 1,300 votes/s, 35 refusals deferring
5,400 votes). Here the tries are *ordered* instead of simultaneous:

- every transaction has a rank order over the eligible members, by rendezvous hashing of
  (tx_id, node_id): the same order on every node that has the same membership, spread
  evenly over members, and stable when a member leaves (only its transactions move);
- the member ranked 0 records the transaction's votes (and ticks its deadline) at once;
- the member ranked r holds each vote on standby and records it only if it is still not in
  the log ``r * grace`` after it arrived *and* the members ranked before it look gone: none
  of them has appended anything to the log for a grace (down, partitioned, frozen). A member
  ahead that is alive but behind is waited for, up to ``patience``: taking over from a busy
  recorder only adds writers to its streams, and under overload those take-overs fed on each
  other (measured, N=7 at 1,400 votes/s: 517 refusals, 10,180 deferrals, e2e p50 24 s).
  ``patience`` still bounds a live recorder that drops votes (Byzantine). Every node still
  tries; only the order is chosen.

Safety never rests on this: the etcd CAS and Postgres's unique keys still decide, and two
nodes that disagree on the ranking (a membership change in flight) merely race as before.
"""

from __future__ import annotations

import blake3

DEFAULT_GRACE_MS = 400
DEFAULT_PATIENCE_MS = 5000
DEFAULT_FANOUT = 2
DEFAULT_HOLD_MS = 100
LOAD_FACTOR = 3.0  # worker loops a member ahead may take between appends before it looks gone


def ranking(tx_id: str, eligible: list[str]) -> list[str]:
    """The eligible members in the order they take up ``tx_id``'s votes (highest weight first)."""
    return sorted(eligible, key=lambda n: blake3.blake3(f"{tx_id}\x00{n}".encode()).digest(), reverse=True)


def rank(tx_id: str, node_id: str, eligible: list[str]) -> int:
    """Where ``node_id`` stands for ``tx_id``; a node that is not eligible stands after everyone."""
    return len(ahead_of(tx_id, node_id, eligible))


def delay_ms(tx_id: str, node_id: str, eligible: list[str], grace_ms: int = DEFAULT_GRACE_MS) -> int:
    """How long ``node_id`` leaves a vote (or a deadline) of ``tx_id`` to the members ranked before it."""
    return rank(tx_id, node_id, eligible) * grace_ms


def ahead_of(tx_id: str, node_id: str, eligible: list[str]) -> list[str]:
    """The members that take up ``tx_id``'s votes before ``node_id``."""
    order = ranking(tx_id, eligible)
    return order[:order.index(node_id)] if node_id in order else order


def recipients(tx_id: str, sender: str, eligible: list[str], fanout: int) -> list[str]:
    """The members a vote on ``tx_id`` is sent to by ``sender``: the first ``fanout`` of the ranking besides it.

    Only the member ranked first records a vote, and the next ones only if it is gone; the others
    would hold it on standby and drop it once the log has it. Sent to every member, a vote cost
    N - 1 receptions (decrypt, demultiplex, parse, check the signatures) at N - 1 nodes, the
    largest share of a node's CPU (issue 15). The sender holds its own vote too and records it
    itself when the recipients look gone, so a vote is never only in one place.
    """
    return [n for n in ranking(tx_id, eligible) if n != sender][:fanout]


def take_over(now: float, due: float, arrived: float, ahead_last_append: list[float | None],
              grace_s: float, patience_s: float) -> str | None:
    """Should a standby vote be recorded by us now, and why? (times in seconds, one monotonic clock)

    ``ahead_last_append``: when each member ranked before us last appended to the log (None:
    not since we started). Our turn has come (``due``) and either they all look gone
    (``"silent"``), or the vote has waited longer than ``patience`` whatever they are doing
    (``"patience"``). None: keep waiting.
    """
    if now < due:
        return None
    if now >= arrived + patience_s:
        return "patience"
    if all(t is None or now - t >= grace_s for t in ahead_last_append):
        return "silent"
    return None


def under_load(wait_s: float, loop_s: float, factor: float = LOAD_FACTOR) -> float:
    """A wait (grace or patience) stretched to ``factor`` worker loops when a loop takes long.

    A live recorder appends once per pass of its worker loop; under load a pass takes a second or
    more (its batch, its etcd and Postgres round trips, its reads of the others' rows), so a fixed
    0.4 s grace took a busy recorder for a dead one: at N=10, 30 tx/s offered, ~2,000 take-overs per
    200 transactions, each adding a writer to a busy stream (more etcd refusals, more load). Our own
    loop's duration is the measure of that load we have: the members share the workload, so theirs
    are alike. Unloaded (a pass of ~20 ms) the wait is unchanged.
    """
    return max(wait_s, factor * loop_s)


def release_held(held: int, logged: int, threshold: int, eligible: int, waited_s: float, hold_s: float) -> str | None:
    """Should the first recorder append the votes it holds for one transaction now, and why?

    The first recorder gathers a transaction's votes into fewer, larger appends: every append is
    read and decided again by every other member, and at N=10 a follower paid 3.0 ms per transaction
    at 2 votes an append against 1.7 ms at 10 (bench/follow_bench.py). It never holds back the vote
    that completes the threshold (``"threshold"``: consensus is not delayed), appends the rest as soon
    as every eligible member has voted (``"all"``), and holds nothing longer than ``hold_s``
    (``"hold"``), well under the grace after which the next member would take over from a silent
    recorder. ``held``: distinct voters held and not yet in the log; ``logged``: voters the log has.
    """
    total = held + logged
    if held <= 0:
        return None
    if waited_s >= hold_s:
        return "hold"
    if logged < threshold <= total:
        return "threshold"
    if total >= eligible:
        return "all"
    return None


def may_hold(hold_s: float, loop_s: float) -> bool:
    """Hold votes at all? Not while a pass of the worker loop takes as long as the hold.

    A loaded recorder already appends what arrived during its last pass in one batch, and every
    vote it holds on top of that is one its standby may take over (one pair, N=10 at 15 tx/s on a
    stressed box, before this rule: 209 take-overs with the hold against 115 without, e2e p50 713
    against 275 ms).
    """
    return hold_s > 0 and loop_s < hold_s
