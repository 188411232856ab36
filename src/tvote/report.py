"""What the operator reads: the tables ``tvote`` prints (shared by the commands and ``tvote up``'s summary)."""

from __future__ import annotations

import json

import psycopg
from rich.console import Console
from rich.table import Table


def print_bans(dsn: str, console: Console) -> None:
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT m.node_id, m.ban_reason, v.tx_id, v.evidence_json FROM members m "
            "LEFT JOIN LATERAL (SELECT tx_id, evidence_json FROM byzantine_violations b "
            "  WHERE b.node_id = m.node_id AND b.violation_type <> 'SILENT_FAILURE' ORDER BY id LIMIT 1) v ON true "
            "WHERE m.banned ORDER BY m.node_id").fetchall()
    t = Table(title="bans")
    for col in ("node", "reason", "tx", "evidence"):
        t.add_column(col)
    for node, reason, tx, ev in rows:
        t.add_row(node, reason or "", tx or "", json.dumps(ev)[:90] if ev else "")
    console.print(t if rows else "bans: none")
