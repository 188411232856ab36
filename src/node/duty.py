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
  the log ``r * grace`` after it arrived (the node ranked 0 is down, partitioned, or
  Byzantine and silent). Every node still tries; only the order is chosen.

Safety never rests on this: the etcd CAS and Postgres's unique keys still decide, and two
nodes that disagree on the ranking (a membership change in flight) merely race as before.
"""

from __future__ import annotations

import blake3

DEFAULT_GRACE_MS = 400


def ranking(tx_id: str, eligible: list[str]) -> list[str]:
    """The eligible members in the order they take up ``tx_id``'s votes (highest weight first)."""
    return sorted(eligible, key=lambda n: blake3.blake3(f"{tx_id}\x00{n}".encode()).digest(), reverse=True)


def rank(tx_id: str, node_id: str, eligible: list[str]) -> int:
    """Where ``node_id`` stands for ``tx_id``; a node that is not eligible stands after everyone."""
    order = ranking(tx_id, eligible)
    return order.index(node_id) if node_id in order else len(order)


def delay_ms(tx_id: str, node_id: str, eligible: list[str], grace_ms: int = DEFAULT_GRACE_MS) -> int:
    """How long ``node_id`` leaves a vote (or a deadline) of ``tx_id`` to the members ranked before it."""
    return rank(tx_id, node_id, eligible) * grace_ms
