"""The event store port: what every adapter (Postgres, in-memory) promises, and the hash chain.

An append is a list of *units*, one per decision. A unit names the stream versions its
decision read (``expected``) and the events it writes. Per unit, atomically:

- every event's idempotency key already in the log  -> ``DUPLICATE`` (a retried append: a no-op);
- some but not all keys present, or a stream moved   -> ``CONFLICT`` (reload, decide again);
- otherwise                                          -> ``APPENDED``, with gap-free positions.

Units are applied in order, so a later unit may build on an earlier one in the same batch;
if the earlier one conflicts, the later one conflicts too (its expectation no longer holds).

Every row is chained: ``hash = BLAKE3(prev_hash || canonical(row))``. The first row's
``prev_hash`` is 32 zero bytes. ``audit verify`` walks the chain.

R13: the first row of each unit carries the unit's *command* (what was decided), and the last row of
each append carries its writer's signature over the batch (``events.writers``), so any follower can
check who wrote every row and re-derive every decision (``events.follow``).
"""

from __future__ import annotations

import json
import json.encoder
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import blake3

from events.model import Event
from events.upcast import decode
from events.writers import RowSigner

GENESIS = bytes(32)
_LEN = struct.Struct(">I")
MAX_PAYLOAD = 64 * 1024


def canonical_json(payload: dict[str, Any]) -> bytes:
    """The one JSON encoding that is hashed; it survives a jsonb round trip unchanged.

    ``json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``, byte for byte
    (tests/unit/test_canonical_json.py), by the C encoder made once: every row written and every row a
    follower checks is encoded, and ``dumps`` built a new encoder each time (4.2 -> 2.6 us a vote row).
    """
    return "".join(_encode(payload, 0)).encode() if _encode is not None else _CANONICAL.encode(payload).encode()


def _not_json(o: object) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
# json's own accelerator (what ``dumps`` runs): no circular check (payloads are trees), sort_keys, allow_nan.
_encode = (json.encoder.c_make_encoder(None, _not_json, json.encoder.c_encode_basestring_ascii, None, ":", ",",
                                       True, False, True)
           if json.encoder.c_make_encoder is not None and json.encoder.c_encode_basestring_ascii is not None else None)


@dataclass(frozen=True, slots=True)
class NewEvent:
    stream_id: str
    event_type: str
    schema_version: int
    payload: dict[str, Any]
    idempotency_key: str
    body: bytes = b""  # canonical_json(payload), computed once: it is sized, hashed and stored
    command: bytes = b""  # canonical JSON of the unit's command, on a unit's first event only (R13)

    def __post_init__(self) -> None:
        if not self.body:
            object.__setattr__(self, "body", canonical_json(self.payload))

    @classmethod
    def of(cls, e: Event, command: bytes = b"") -> NewEvent:
        return cls(e.stream, e.TYPE, e.VERSION, e.to_payload(), e.key, command=command)


@dataclass(frozen=True, slots=True)
class Recorded:
    position: int
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    payload: dict[str, Any]
    recorded_at_us: int  # microseconds since the epoch (UTC)
    idempotency_key: str
    writer: str
    prev_hash: bytes
    hash: bytes
    command: dict[str, Any] | None = None  # the unit's command, on its first row (R13)
    signature: bytes | None = None  # the writer's signature over its batch, on the batch's last row
    signed_from: int | None = None  # the first position that signature covers

    def event(self) -> Event:
        return decode(self.event_type, self.schema_version, self.payload)

    def content_hash(self) -> bytes:
        return chain_hash(
            self.prev_hash, self.position, self.stream_id, self.stream_version, self.event_type,
            self.schema_version, self.payload, self.recorded_at_us, self.idempotency_key, self.writer,
            canonical_json(self.command) if self.command is not None else b"",
        )


def chain_hash(
    prev: bytes, position: int, stream_id: str, version: int, event_type: str, schema_version: int,
    payload: dict[str, Any] | bytes, recorded_at_us: int, key: str, writer: str, command: bytes = b"",
) -> bytes:
    """BLAKE3 over the previous hash and the row; ``payload`` may be given already canonical.

    ``command`` (a unit's first row) is hashed after the writer, length-prefixed, only when present:
    a row without one hashes exactly as rows did before commands were logged.
    """
    body = payload if isinstance(payload, bytes) else canonical_json(payload)
    sid, typ, k, w = stream_id.encode(), event_type.encode(), key.encode(), writer.encode()
    # One buffer, one hash call: the same bytes as hashing each length-prefixed part in turn.
    return blake3.blake3(b"".join((
        prev, struct.pack(">qiHq", position, version, schema_version, recorded_at_us),
        _LEN.pack(len(sid)), sid, _LEN.pack(len(typ)), typ, _LEN.pack(len(body)), body,
        _LEN.pack(len(k)), k, _LEN.pack(len(w)), w,
        *((_LEN.pack(len(command)), command) if command else ()),
    ))).digest()


@dataclass(frozen=True)
class Unit:
    """One decision: the stream versions it read, and the events it writes."""

    expected: dict[str, int]
    events: tuple[NewEvent, ...]

    @classmethod
    def of(cls, expected: dict[str, int], events: list[Event], command: dict[str, Any] | None = None) -> Unit:
        """A decision's unit; its first event carries ``command`` (what was decided) for followers (R13)."""
        cmd = canonical_json(command) if command is not None else b""
        return cls(dict(expected), tuple(NewEvent.of(e, cmd if i == 0 else b"") for i, e in enumerate(events)))


@dataclass(frozen=True)
class Snapshot:
    """A reader's folded state at a log position (events.snapshot), and what proves it belongs to this log."""

    owner: str
    position: int
    hash: bytes  # the log's chain hash at ``position``
    state: bytes
    signature: bytes | None = None  # the owner's, over snapshot_bytes(...)


def snapshot_bytes(owner: str, position: int, row_hash: bytes, state: bytes) -> bytes:
    """What an owner signs: its name, the position, the log's hash there and a digest of the state."""
    return b"".join((_LEN.pack(len(owner)), owner.encode(), struct.pack(">q", position), row_hash,
                     blake3.blake3(state).digest()))


class Outcome(Enum):
    APPENDED = "appended"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class UnitResult:
    outcome: Outcome
    positions: tuple[int, ...] = ()
    detail: str = ""
    last_hash: bytes = b""  # the chain hash of the unit's last row (APPENDED): a writer follows its own rows


class EventStore(Protocol):
    def append(self, units: list[Unit], signer: RowSigner) -> list[UnitResult]:
        """Append in one transaction; the batch's last row carries ``signer``'s signature over the batch."""

    def read_all(self, after: int = 0, limit: int = 1000) -> list[Recorded]: ...

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[Recorded]: ...

    def stream_versions(self, stream_ids: list[str]) -> dict[str, int]: ...

    def has_keys(self, keys: list[str]) -> set[str]: ...

    def last_position(self) -> int: ...

    def row_hash(self, position: int) -> bytes | None:
        """The chain hash of the row at ``position`` (None: no such row)."""

    def save_snapshot(self, snap: Snapshot, keep: int = 2) -> None:
        """Store ``snap`` and keep only the ``keep`` newest of its owner."""

    def snapshots(self, owner: str) -> list[Snapshot]:
        """The owner's snapshots, newest first."""


def _check_new_event(e: NewEvent) -> None:
    """A malformed row is refused before anything of its batch is written."""
    if not (isinstance(e.stream_id, str) and 0 < len(e.stream_id) <= 200 and isinstance(e.event_type, str)
            and isinstance(e.idempotency_key, str) and e.idempotency_key and isinstance(e.payload, dict)):
        raise ValueError("stream id, event type and idempotency key must be strings and the payload an object")
    v = e.schema_version
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 32767:
        raise ValueError("schema version must be an integer in 1..32767 (the column is a SMALLINT)")


def plan(
    units: list[Unit], versions: dict[str, int], existing_keys: set[str]
) -> list[tuple[UnitResult, list[tuple[NewEvent, int]]]]:
    """Decide each unit's outcome and assign stream versions; shared by every adapter.

    ``versions`` and ``existing_keys`` describe the log at the start of the batch; they are
    updated in place as units are accepted, so later units see earlier ones.
    """
    out: list[tuple[UnitResult, list[tuple[NewEvent, int]]]] = []
    for u in units:
        keys = [e.idempotency_key for e in u.events]
        present = [k for k in keys if k in existing_keys] if existing_keys else []
        if keys and len(present) == len(keys):
            out.append((_DUPLICATE, []))
            continue
        if present:
            out.append((UnitResult(Outcome.CONFLICT, detail=f"already recorded: {present[0]}"), []))
            continue
        if len(keys) > 1 and len(set(keys)) != len(keys):
            raise ValueError("a unit repeats an idempotency key")
        moved = next((s for s, v in u.expected.items() if versions.get(s, 0) != v), None)
        if moved is not None:
            detail = f"{moved} at {versions.get(moved, 0)}, expected {u.expected[moved]}"
            out.append((UnitResult(Outcome.CONFLICT, detail=detail), []))
            continue
        rows = []
        for e in u.events:
            _check_new_event(e)
            if e.stream_id not in u.expected:
                raise ValueError(f"unit writes {e.stream_id} without naming its expected version")
            if len(e.body) > MAX_PAYLOAD:
                raise ValueError(f"{e.event_type} payload over {MAX_PAYLOAD} bytes")
            versions[e.stream_id] = versions.get(e.stream_id, 0) + 1
            rows.append((e, versions[e.stream_id]))
            existing_keys.add(e.idempotency_key)
        out.append((_APPENDED, rows))
    return out


_APPENDED = UnitResult(Outcome.APPENDED)  # frozen: one instance serves every unit
_DUPLICATE = UnitResult(Outcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class ChainedRow:
    """A row laid out for writing: its place in the chain and, on a batch's last row, the signature."""

    position: int
    version: int
    event: NewEvent
    prev_hash: bytes
    hash: bytes
    signature: bytes | None = None
    signed_from: int | None = None


def chain_rows(planned: list[tuple[UnitResult, list[tuple[NewEvent, int]]]], position: int, prev: bytes,
               now_us: int, signer: RowSigner) -> tuple[list[ChainedRow], list[UnitResult]]:
    """Positions, chain hashes and the writer's signature for a planned append; shared by every adapter.

    ``position``/``prev``: the log's last position and hash under the append lock. Units that are not
    APPENDED write nothing; the last row written carries the signature over all the rows written.
    """
    rows: list[ChainedRow] = []
    results: list[UnitResult] = []
    writer = signer.writer
    for result, unit_rows in planned:
        if result.outcome is not Outcome.APPENDED:
            results.append(result)
            continue
        positions = []
        for e, version in unit_rows:
            position += 1
            h = chain_hash(prev, position, e.stream_id, version, e.event_type, e.schema_version, e.body, now_us,
                           e.idempotency_key, writer, e.command)
            rows.append(ChainedRow(position, version, e, prev, h))
            prev = h
            positions.append(position)
        results.append(UnitResult(Outcome.APPENDED, tuple(positions), last_hash=prev))
    if rows:
        last = rows[-1]
        rows[-1] = ChainedRow(last.position, last.version, last.event, last.prev_hash, last.hash,
                              signer.sign_batch(rows[0].position, last.hash), rows[0].position)
    return rows, results
