"""A digest of every projection table, row for row: equal digests mean equal projections (R12)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import blake3
import psycopg

# Every projection table, with the key that orders its rows. The tracking row is left out:
# it says how far a projector got, not what the log says.
TABLES: dict[str, str] = {
    "tx_state": "tx_id",
    "vote_counts": "tx_id, value",
    "vote_history": "tx_id, node_id",
    "byzantine_violations": "id",
    "members": "node_id",
    "node_reputation": "peer_id",
    "blockchain_submissions": "tx_id",
    "blockchain_submissions_archive": "tx_id",
    "vote_history_archive": "tx_id, node_id",
}


def _canon(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, bytes | memoryview):
        return bytes(v).hex()
    if isinstance(v, float):
        return repr(v)
    return v


def table_digests(conn: psycopg.Connection, schema: str = "public") -> dict[str, str]:
    out = {}
    for table, order in TABLES.items():
        h = blake3.blake3(table.encode())
        cur = conn.execute(f'SELECT * FROM "{schema}".{table} ORDER BY {order}')
        cols = [d.name for d in cur.description]
        h.update(json.dumps(cols).encode())
        for row in cur:
            h.update(json.dumps([_canon(v) for v in row], sort_keys=True, default=str).encode() + b"\n")
        out[table] = h.hexdigest()
    return out


def digest(conn: psycopg.Connection, schema: str = "public") -> str:
    parts = table_digests(conn, schema)
    return blake3.blake3(json.dumps(parts, sort_keys=True).encode()).hexdigest()
