"""An in-memory event store with the same contract as Postgres: for unit tests of the pure core."""

from __future__ import annotations

import json
import threading
import time

from events.store import GENESIS, Recorded, Snapshot, Unit, UnitResult, chain_rows, plan
from events.writers import RowSigner


class MemoryStore:
    def __init__(self) -> None:
        self._rows: list[Recorded] = []
        self._keys: set[str] = set()
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._snapshots: dict[str, list[Snapshot]] = {}

    def append(self, units: list[Unit], signer: RowSigner) -> list[UnitResult]:
        with self._lock:
            versions = dict(self._versions)
            keys = set(self._keys)
            planned = plan(units, versions, keys)
            now_us = time.time_ns() // 1000
            prev = self._rows[-1].hash if self._rows else GENESIS
            rows, results = chain_rows(planned, len(self._rows), prev, now_us, signer)
            # built first, appended at once: a batch lands whole or not at all
            self._rows.extend(
                Recorded(r.position, r.event.stream_id, r.version, r.event.event_type, r.event.schema_version,
                         r.event.payload, now_us, r.event.idempotency_key, signer.writer, r.prev_hash, r.hash,
                         json.loads(r.event.command) if r.event.command else None, r.signature, r.signed_from)
                for r in rows)
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

    def row_hash(self, position: int) -> bytes | None:
        return self._rows[position - 1].hash if 0 < position <= len(self._rows) else None

    def save_snapshot(self, snap: Snapshot, keep: int = 2) -> None:
        with self._lock:
            mine = [s for s in self._snapshots.get(snap.owner, []) if s.position != snap.position]
            self._snapshots[snap.owner] = sorted([snap, *mine], key=lambda s: -s.position)[:keep]

    def snapshots(self, owner: str) -> list[Snapshot]:
        return list(self._snapshots.get(owner, []))
