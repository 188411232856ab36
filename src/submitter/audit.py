"""Check the chain against the log: every on-chain record is a consensus of the log, written once (R11).

Anyone holding the log and an RPC endpoint can run it. For each transaction that reached consensus:

- CONFIRMED: exactly one ``Recorded`` event on chain, written by the transaction hash the log
  confirmed, with the log's value and the log's certificate hash (BLAKE3 of the signed votes, so the
  record is tied to the very signatures ``audit verify`` checks);
- aborted or expired: no record at all;
- still submitting: at most one record, and it must match too.

Any ``Recorded`` event for a tx id the log never decided is a finding. The findings are data; the
``tvote audit verify`` command could print them beside its own (see the report of issue 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chain import ChainPort
from events import rules
from events.model import SubmissionConfirmed, ThresholdReached
from events.store import EventStore


@dataclass
class ChainAudit:
    checked: int = 0
    findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def audit_chain(store: EventStore, client: ChainPort, *, from_block: int = 0) -> ChainAudit:
    ledger = rules.Ledger()
    certs: dict[str, str] = {}
    confirmed: dict[str, str] = {}
    pos = 0
    while True:
        rows = store.read_all(after=pos, limit=5000)
        for r in rows:
            e = r.event()
            ledger.apply(e)
            if isinstance(e, ThresholdReached) and e.tx_id in ledger.txs:
                certs[e.tx_id] = e.certificate_hash
            elif isinstance(e, SubmissionConfirmed):
                confirmed[e.tx_id] = e.tx_hash
        if len(rows) < 5000:
            break
        pos = rows[-1].position
    records: dict[str, list] = {}
    for ev in client.recorded_events(from_block=from_block):
        records.setdefault(ev.tx_id, []).append(ev)
    report = ChainAudit()
    for tx_id, cert in sorted(certs.items()):
        tx = ledger.txs[tx_id]
        recs = records.pop(tx_id, [])
        report.checked += 1
        if len(recs) > 1:
            report.findings.append(f"{tx_id}: {len(recs)} successful writes on chain (R11: at most one)")
        if tx.status in (rules.ABORTED_BYZANTINE, rules.ABORTED_NO_QUORUM, rules.EXPIRED) and recs:
            report.findings.append(f"{tx_id}: {tx.status} in the log but written on chain")
            continue
        if tx.status == rules.CONFIRMED and not recs:
            report.findings.append(f"{tx_id}: confirmed in the log but no record on chain")
        for rec in recs[:1]:
            if rec.value != tx.value or rec.certificate_hash.hex() != cert:
                report.findings.append(
                    f"{tx_id}: on chain value {rec.value} / certificate {rec.certificate_hash.hex()[:16]}..., "
                    f"the log decided {tx.value} / {cert[:16]}...")
            if tx.status == rules.CONFIRMED and "0x" + rec.tx_hash.hex() != confirmed.get(tx_id):
                report.findings.append(f"{tx_id}: written by 0x{rec.tx_hash.hex()}, the log confirmed "
                                       f"{confirmed.get(tx_id)}")
            if tx.status != rules.CONFIRMED and tx.status in (rules.SUBMITTING, rules.THRESHOLD_REACHED):
                signed = set(tx.signed)
                if "0x" + rec.tx_hash.hex() not in signed:
                    report.findings.append(f"{tx_id}: written on chain by 0x{rec.tx_hash.hex()}, a transaction "
                                           "the log never recorded as signed")
    for tx_id, recs in sorted(records.items()):
        report.findings.append(f"{tx_id}: {len(recs)} record(s) on chain for a transaction the log never decided")
    return report
