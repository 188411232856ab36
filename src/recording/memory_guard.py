"""The guard port in memory: one process, several writers, the same promises as etcd.

For unit tests, benchmarks and tools that have no other node to race (a projector test
that writes a log, a calibration run). ``tests/guard_contract.py`` runs the same suite
against this and ``recording.etcd_guard.EtcdGuard``, so a recorder behaves the same on both.

Writers share one :class:`MemoryKeys` (the "cluster"); every key a writer puts goes under its lease
(vote claims, heads, head writers, counters) and vanishes when :meth:`MemoryKeys.expire` ends that
writer's lease, as it would in etcd when a node dies or its claim lease lapses.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from recording.guard import Claim, Refusal


@dataclass
class _Entry:
    value: str
    mod_revision: int
    lease: tuple[str, int] | None  # (owner, lease generation) or None: outlives its writer


@dataclass
class MemoryKeys:
    """The shared key space: what an etcd cluster holds for a set of writers."""

    data: dict[str, _Entry] = field(default_factory=dict)
    revision: int = 0
    leases: dict[str, int] = field(default_factory=dict)  # owner -> current lease generation
    lock: threading.Lock = field(default_factory=threading.Lock)
    _gen: itertools.count = field(default_factory=lambda: itertools.count(1))

    def lease_of(self, owner: str) -> tuple[str, int]:
        if owner not in self.leases:
            self.leases[owner] = next(self._gen)
        return owner, self.leases[owner]

    def expire(self, owner: str) -> None:
        """The owner's lease runs out (it crashed, or the lease rotated and lapsed): its keys are gone."""
        with self.lock:
            lease = self.leases.pop(owner, None)
            if lease is not None:
                self.data = {k: e for k, e in self.data.items() if e.lease != (owner, lease)}


class MemoryGuard:
    """``recording.guard.Guard`` over a :class:`MemoryKeys` (a fresh private one by default)."""

    def __init__(self, node_id: str, keys: MemoryKeys | None = None) -> None:
        self.node_id = node_id
        self.keys = keys if keys is not None else MemoryKeys()

    def _lease(self) -> tuple[str, int]:
        return self.keys.lease_of(self.node_id)

    def claim(self, claims: list[Claim]) -> Refusal | None:
        k = self.keys
        with k.lock:
            lease = self._lease()
            start: dict[str, int] = {}
            for c in claims:  # a later claim in the batch may build on an earlier one's heads
                for s, v in c.expected.items():
                    start.setdefault(s, v)
            end = dict(start)
            for c in claims:
                for s, n in c.written.items():
                    end[s] += n
            heads = sorted(start)
            votes = [(key, v) for c in claims for key, v in c.votes.items()]
            ok = all(self._head_is(s, start[s]) for s in heads) and not any(
                f"votes/{key}" in k.data for key, _ in votes)
            if not ok:
                refusal = Refusal({}, {}, {})
                for s in heads:
                    refusal.heads[s] = self._head_locked(s)
                    refusal.writers_alive[s] = f"streams/{s}/writer" in k.data
                    mark = k.data.get(f"streams/{s}/writer")
                    refusal.head_writers[s] = mark.value.split(":", 1)[1] if mark is not None else None
                for key, _ in votes:
                    e = k.data.get(f"votes/{key}")
                    if e is not None:
                        refusal.votes[key] = (e.value, e.mod_revision, e.lease == lease)
                return refusal
            k.revision += 1
            for s in heads:
                if end[s] != start[s]:
                    k.data[f"streams/{s}/head"] = _Entry(str(end[s]), k.revision, lease)
                    k.data[f"streams/{s}/writer"] = _Entry(f"{end[s]}:{self.node_id}", k.revision, lease)
            for key, v in votes:
                k.data[f"votes/{key}"] = _Entry(v, k.revision, lease)
            for c in claims:
                for key, v in c.counters.items():
                    k.data[key] = _Entry(v, k.revision, lease)
            return None

    def _head_is(self, stream: str, version: int) -> bool:
        return self._head_locked(stream) == (None if version == 0 else version)

    def _head_locked(self, stream: str) -> int | None:
        e = self.keys.data.get(f"streams/{stream}/head")
        return int(e.value) if e is not None else None

    def repair_head(self, stream: str, seen: int | None, truth: int) -> bool:
        k = self.keys
        with k.lock:
            if self._head_locked(stream) != seen:
                return False
            k.revision += 1
            key = f"streams/{stream}/head"
            if truth == 0:  # version 0 is "no head", never "0" (as in etcd)
                k.data.pop(key, None)
            else:
                k.data[key] = _Entry(str(truth), k.revision, self._lease())
            return True

    def release_vote(self, suffix: str, seen_mod_revision: int) -> bool:
        k = self.keys
        with k.lock:
            e = k.data.get(f"votes/{suffix}")
            if e is None or e.mod_revision != seen_mod_revision:
                return False
            k.revision += 1
            del k.data[f"votes/{suffix}"]
            return True

    def head(self, stream: str) -> int | None:
        with self.keys.lock:
            return self._head_locked(stream)

    def head_writer(self, stream: str) -> str | None:
        with self.keys.lock:
            e = self.keys.data.get(f"streams/{stream}/writer")
        return e.value.split(":", 1)[1] if e is not None else None

    def get(self, suffix: str) -> str | None:
        with self.keys.lock:
            e = self.keys.data.get(suffix)
        return e.value if e is not None else None

    def close(self) -> None:
        """Like a clean shutdown in etcd: our lease is revoked, our claims go with it."""
        self.keys.expire(self.node_id)
