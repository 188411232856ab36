"""Bounded seen-cache for gossip message ids (LRU by count, expiry by time).

py-libp2p 0.8.1's own ``LastSeenCache`` is TTL-only (no size bound: a flood of distinct
messages grows it without limit until the next sweep) and starts one sweeper *thread* per
host. This cache is bounded by entry count (oldest evicted first) *and* by age, needs no
thread (expired entries are dropped lazily on every insert), and is only touched from the
host's Trio thread, so it needs no lock.

It is duck-typed to what ``Pubsub`` and ``GossipSub`` call on ``pubsub.seen_messages``:
``add(key) -> bool`` and ``has(key) -> bool``, plus ``length()`` and ``stop()``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class SeenCache:
    """LRU + TTL set of message ids.

    ``has`` does not refresh an entry: the TTL is measured from first sight, so a peer
    replaying an old message keeps it "seen" for at most ``ttl`` seconds after we first
    saw it, not forever (replays older than that are the validator's job: timestamps).
    """

    def __init__(
        self, max_entries: int = 10_000, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries <= 0 or ttl <= 0:
            raise ValueError("max_entries and ttl must be positive")
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self.evicted_by_size = 0

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, expiry = next(iter(entries.items()))
            if expiry > now:
                break
            del entries[key]

    def add(self, key: bytes) -> bool:
        """Mark ``key`` seen; return True if it was not already (live) in the cache."""
        now = self._clock()
        self._expire(now)
        entries = self._entries
        if key in entries:
            return False
        entries[key] = now + self.ttl
        if len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evicted_by_size += 1
        return True

    def has(self, key: bytes) -> bool:
        """True if ``key`` was seen less than ``ttl`` seconds ago and not evicted."""
        expiry = self._entries.get(key)
        if expiry is None:
            return False
        if expiry <= self._clock():
            del self._entries[key]
            return False
        return True

    def __contains__(self, key: bytes) -> bool:
        return self.has(key)

    def __len__(self) -> int:
        return len(self._entries)

    def length(self) -> int:
        """Current number of entries (the name ``LastSeenCache`` uses)."""
        return len(self._entries)

    def stop(self) -> None:
        """No background thread to stop; present for interface parity."""
