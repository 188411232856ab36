"""An in-memory event store with the same contract as Postgres: for unit tests of the pure core."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from events.store import GENESIS, Outcome, Recorded, Unit, UnitResult, chain_hash, plan


class MemoryStore:
    def __init__(self) -> None:
        self._rows: list[Recorded] = []
        self._keys: set[str] = set()
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def append(self, units: list[Unit], writer: str) -> list[UnitResult]:
        with self._lock:
            versions = dict(self._versions)
            keys = set(self._keys)
            planned = plan(units, versions, keys)
            results = []
            now_us = time.time_ns() // 1000
            new_rows: list[Recorded] = []  # built first, appended at once: a batch lands whole or not at all
            prev = self._rows[-1].hash if self._rows else GENESIS
            for result, rows in planned:
                positions = []
                for e, version in rows:
                    pos = len(self._rows) + len(new_rows) + 1
                    h = chain_hash(prev, pos, e.stream_id, version, e.event_type, e.schema_version, e.body,
                                   now_us, e.idempotency_key, writer)
                    new_rows.append(Recorded(pos, e.stream_id, version, e.event_type, e.schema_version,
                                             e.payload, now_us, e.idempotency_key, writer, prev, h))
                    prev = h
                    positions.append(pos)
                results.append(replace(result, positions=tuple(positions)) if result.outcome is Outcome.APPENDED
                               else result)
            self._rows.extend(new_rows)
            self._versions, self._keys = versions, keys
            return results

    def read_all(self, after: int = 0, limit: int = 1000) -> list[Recorded]:
        return self._rows[after: after + limit]

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[Recorded]:
        return [r for r in self._rows if r.stream_id == stream_id and r.stream_version > after_version]

    def stream_versions(self, stream_ids: list[str]) -> dict[str, int]:
        return {s: self._versions.get(s, 0) for s in stream_ids}

    def has_keys(self, keys: list[str]) -> set[str]:
        return {k for k in keys if k in self._keys}

    def last_position(self) -> int:
        return len(self._rows)
