"""The guard port: what the write path asks of etcd before it touches the log (R13).

A recorder runs one guard transaction per batch that

- compares each stream head it read (the version it decided on) and creates each vote
  claim ``<tx>/<node>`` that must not exist yet;
- on success moves the heads, stores the vote claims, and sets the fast-path counters
  (the decision's :class:`events.rules.Effects`).

The claim on a vote decides which node appends it, so the log holds it once; a node whose
claim finds another value there holds double-vote evidence. Postgres is still the truth:
its version check and unique keys are the final word, and heads are repaired from it
whenever they disagree.

Two adapters keep this promise: ``recording.etcd_guard.EtcdGuard`` (production) and
``recording.memory_guard.MemoryGuard`` (one process: tests, benchmarks, tools that need no
cross-node claim). ``tests/guard_contract.py`` runs the same suite against both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

from events.rules import Effects


@dataclass
class Claim:
    """What one unit asks of the guard."""

    expected: dict[str, int]  # stream -> version the decision read
    written: dict[str, int]  # stream -> number of events it writes
    votes: dict[str, str] = field(default_factory=dict)  # (tx/node) vote key suffix -> vote JSON
    counters: dict[str, str] = field(default_factory=dict)  # key suffix -> value (counts, status)

    @classmethod
    def of(cls, expected: dict[str, int], written: dict[str, int], effects: Effects) -> Claim:
        """A decision's effects on the seed's key layout: vote claims, status and vote counters."""
        claim = cls(dict(expected), dict(written))
        for e in effects.claims:
            claim.votes[f"{e.tx_id}/{e.node_id}"] = vote_json(e.tx_id, e.node_id, e.vote, e.author_peer)
        for tx_id, status in effects.status:
            claim.counters[f"transaction_status/{tx_id}"] = str(status)
        for tx_id, value, count in effects.counts:
            claim.counters[f"vote_counts/{tx_id}/{value}"] = str(count)
        return claim


@dataclass
class Refusal:
    """Why the guard refused a claim: heads that differ and votes already claimed."""

    heads: dict[str, int | None]  # stream -> the head the guard holds (None: missing)
    writers_alive: dict[str, bool]  # stream -> a live writer's lease still covers that head
    votes: dict[str, tuple[str, int, bool]]  # vote suffix -> (stored JSON, mod revision, claimed by us)
    # stream -> who moved that head, while their lease lives (None: nobody alive), read in the same
    # transaction: the recorder need not ask again, stream by stream (``Guard.head_writer``)
    head_writers: dict[str, str | None] = field(default_factory=dict)


class Guard(Protocol):
    """The port. Every failure to reach the guard's store is a ``StoreUnavailable``."""

    node_id: str

    def claim(self, claims: list[Claim]) -> Refusal | None:
        """One atomic transaction for the whole batch: None when granted, else why not."""

    def repair_head(self, stream: str, seen: int | None, truth: int) -> bool:
        """Set a head to the log's version, if it still holds what we saw (never clobber a live move)."""

    def release_vote(self, suffix: str, seen_mod_revision: int) -> bool:
        """Drop our own stale claim on a vote (our append of it failed), if nobody moved it since."""

    def head(self, stream: str) -> int | None:
        """The head the guard holds for ``stream`` (None: none)."""

    def head_writer(self, stream: str) -> str | None:
        """Who last moved ``stream``'s head, while that writer's lease lives (None: nobody alive)."""

    def get(self, suffix: str) -> str | None:
        """A fast-path key (``vote_counts/<tx>/<value>``, ``transaction_status/<tx>``), for tools."""

    def close(self) -> None: ...


def vote_json(tx_id: str, node_id: str, signed: dict, peer_id: str) -> str:
    """The seed's /votes/{tx_id}/{node_id} value: the signed vote and who relayed it."""
    return json.dumps({**signed, "peer_id": peer_id}, sort_keys=True, separators=(",", ":"))
