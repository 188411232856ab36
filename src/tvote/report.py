"""What the operator reads: the tables ``tvote`` prints (shared by the commands and ``tvote up``'s summary)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from events.vocab import BanReason, ReputationReason


@dataclass
class Ban:
    """A current ban and what caused it: the violation (with its evidence) or the report behind it."""

    node_id: str
    reason: str
    banned_at: Any
    cause_position: int | None
    tx_id: str | None
    evidence: dict | None
    history: list[tuple[int, str]]  # for a floor ban: the reputation changes that led to it (score, reason)


def current_bans(dsn: str) -> list[Ban]:
    """Every banned member with the cause of its *current* ban (not its first violation)."""
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT m.node_id, m.ban_reason, m.banned_at, m.ban_violation_id, v.tx_id, v.evidence_json, e.payload, "
            "m.ban_cause "
            "FROM members m LEFT JOIN byzantine_violations v ON v.id = m.ban_violation_id "
            "LEFT JOIN events e ON e.position = m.ban_violation_id "
            "WHERE m.banned ORDER BY m.node_id").fetchall()
        bans = []
        for node, reason, at, pos, tx, evidence, cause, cause_key in rows:
            history: list[tuple[int, str]] = []
            if reason == BanReason.REPUTATION_FLOOR:  # the changes up to the ban event itself
                history = [(p["score"], p["reason"]) for (p,) in c.execute(
                    "SELECT payload FROM events WHERE event_type = 'ReputationChanged' AND payload->>'node_id' = %s "
                    "AND position < (SELECT position FROM events WHERE idempotency_key = %s) "
                    "ORDER BY position DESC LIMIT 10", (node, f"ban:{node}:{cause_key}"))][::-1]
            if reason == BanReason.INVALID_ENTRY and cause is not None:
                evidence = {"invalid_entry_at": cause.get("position"), "why": cause.get("reason")}
            bans.append(Ban(node, reason, at, pos, tx, evidence, history))
    return bans


def print_bans(dsn: str, console: Console) -> None:
    bans = current_bans(dsn)
    t = Table(title="bans (the cause of each current ban)")
    for col in ("node", "reason", "since", "cause at", "tx", "evidence"):
        t.add_column(col)
    for b in bans:
        if b.history:
            silent = sum(1 for _, r in b.history if r == ReputationReason.SILENT_FAILURE)
            ev = f"reputation {' -> '.join(str(s) for s, _ in b.history)} ({silent} silent consensus txs)"
        else:
            ev = json.dumps(b.evidence)[:90] if b.evidence else ""
        t.add_row(b.node_id, b.reason or "", str(b.banned_at or "")[:19], str(b.cause_position or ""), b.tx_id or "",
                  ev)
    console.print(t if bans else "bans: none")
