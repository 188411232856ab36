#!/usr/bin/env python3
"""Check a real run's log against the TLA+ model with TLC (trace validation, issue 16 item 4).

    python tla/trace_check.py --dsn postgresql://...          # the whole log
    python tla/trace_check.py --dsn ... --max-tx 50 --ndjson run.ndjson

export (src/events/trace_export.py: the log -> NDJSON, one step per event, per transaction)
-> TraceData.tla (the same steps as a TLA+ sequence: TLC 2.15 has no JSON reader without the
community modules) -> TLC on ThresholdVoteTraceCheck.tla -> accepted, or the first step no
model behaviour matches.

Exit status 0 when the trace is accepted, 1 when it is not (the step is printed), 2 on an error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TLA_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TLA_DIR))
sys.path.insert(0, str(TLA_DIR.parent / "src"))

import run_tlc  # noqa: E402

from events.trace_export import Export, export, read_log  # noqa: E402

MODULE = "ThresholdVoteTraceCheck.tla"
CFG = """CONSTANTS
    NoVal = NoVal
    NoSub = NoSub
    Bug = "{bug}"
INIT TraceInit
NEXT TraceNext
"""
# Every step record has every field (TLC refuses to read a field a record lacks).
DEFAULTS: dict[str, Any] = {
    "k": "", "txn": 0, "pos": 0, "ev": "", "act": "", "cmd": "", "anode": "", "aval": 0, "aarg": "", "arev": 0,
    "node": "", "val": 0, "reason": "", "score": 0, "rev": 0, "voters": [], "origin": "", "first": False,
    "last": False,
}
SET_FIELDS = {"voters", "honest", "byz", "vals", "banned"}


def tla_value(v: Any, as_set: bool = False) -> str:
    """A JSON value as a TLA+ expression: lists of SET_FIELDS are sets, dicts of node -> int functions."""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # the same escapes for " and \\
    if isinstance(v, list):
        inner = ", ".join(tla_value(x) for x in v)
        return "{" + inner + "}" if as_set else "<<" + inner + ">>"
    if isinstance(v, dict):
        return "(" + " @@ ".join(f"{tla_value(k)} :> {tla_value(x)}" for k, x in v.items()) + ")"
    raise TypeError(f"no TLA+ value for {v!r}")


def tla_record(d: dict[str, Any]) -> str:
    return "[" + ", ".join(f"{k} |-> {tla_value(v, k in SET_FIELDS)}" for k, v in d.items()) + "]"


def trace_module(lines: list[dict[str, Any]]) -> str:
    """TraceData.tla from the NDJSON lines: Trace (every step but the params) and TxParams."""
    params = [ln["params"] for ln in lines if ln["k"] == "begin"]
    steps = [DEFAULTS | {k: v for k, v in ln.items() if k not in ("params", "tx")} for ln in lines]
    out = ["---- MODULE TraceData ----", "EXTENDS TLC", "TxParams == <<"]
    out.append(",\n".join(tla_record(p) for p in params))
    out.append(">>")
    out.append("Trace == <<")
    out.append(",\n".join(tla_record(s) for s in steps))
    out.append(">>")
    out.append("====")
    return "\n".join(out) + "\n"


@dataclass
class TraceCheck:
    """The verdict and its sizes."""

    accepted: bool
    events: int  # events in the log
    transactions: int  # transactions checked
    skipped: dict[str, int]  # transactions left out, by reason
    steps: int  # trace steps (begin steps included)
    distinct: int | None  # TLC's distinct states
    export_seconds: float
    tlc_seconds: float
    failed_step: dict[str, Any] | None = None  # the first step nothing matched
    failed_index: int | None = None  # its number in the trace (1-based)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verdict = "ACCEPTED" if self.accepted else ("REJECTED" if self.failed_step else "ERROR")
        line = (f"trace check: {verdict} | log events {self.events} | transactions checked {self.transactions}"
                f" | trace steps {self.steps} | TLC distinct states {self.distinct}"
                f" | export {self.export_seconds:.2f}s | TLC {self.tlc_seconds:.1f}s")
        if self.skipped:
            line += " | left out: " + "; ".join(f"{n} ({why})" for why, n in self.skipped.items())
        if self.failed_step:
            line += f"\n  no model step matches trace step {self.failed_index}: {json.dumps(self.failed_step)}"
        if self.errors:
            line += "\n  " + "\n  ".join(self.errors[:10])
        return line


_DEPTH = re.compile(r"depth of the complete state graph search is (\d+)")


def check_lines(lines: list[dict[str, Any]], timeout: float = 600, workers: int = 1,
                bug: str = "none") -> run_tlc.TlcResult:
    """TLC on the steps; ``bug`` picks a deliberately wrong model (ThresholdVote's Bug), for non-vacuity."""
    with tempfile.TemporaryDirectory(prefix="trace-check-") as tmp:
        cfg = Path(tmp) / "TraceCheck.cfg"
        cfg.write_text(CFG.format(bug=bug))
        return run_tlc.run_tlc(cfg, module=TLA_DIR / MODULE, workers=workers, timeout=timeout,
                               extra_files={"TraceData.tla": trace_module(lines)})


def check_export(ex: Export, export_seconds: float = 0.0, max_tx: int | None = None,
                 timeout: float = 600, bug: str = "none") -> TraceCheck:
    """Run TLC on the export's checked transactions (the first ``max_tx`` of them)."""
    chosen = ex.checked[:max_tx] if max_tx is not None else ex.checked
    lines = [json.loads(x) for x in Export(chosen, ex.events, ex.units).ndjson().splitlines()]
    base = dict(events=ex.events, transactions=len(chosen), skipped=dict(ex.skipped()), steps=len(lines),
                export_seconds=export_seconds)
    if not lines:
        return TraceCheck(accepted=False, distinct=None, tlc_seconds=0.0, errors=["no transaction to check"], **base)
    result = check_lines(lines, timeout=timeout, bug=bug)
    out = TraceCheck(accepted=False, distinct=result.distinct, tlc_seconds=result.seconds, **base)
    depth = [int(d) for d in _DEPTH.findall(result.output)]
    if result.ok and depth:
        # TLC explores every way to match the trace; the depth of its search counts states: the
        # initial one plus one per step matched.  All steps matched: the log is a behaviour of the
        # model.  Otherwise step number `depth` is the first that nothing in the model matches.
        n = depth[-1]
        out.accepted = n == len(lines) + 1
        if out.accepted:
            return out
        out.failed_index = n
        out.failed_step = lines[n - 1] if n is not None and n <= len(lines) else None
        if out.failed_step is not None and n is not None:
            begin = max((j for j in range(n) if lines[j]["k"] == "begin"), default=None)
            if begin is not None:
                out.failed_step = {**out.failed_step, "tx": lines[begin]["tx"]}
    else:
        out.errors = result.errors or result.output.splitlines()[-30:]
    return out


def check_rows(rows: list, max_tx: int | None = None, timeout: float = 600, bug: str = "none") -> TraceCheck:
    start = time.monotonic()
    ex = export(rows)
    return check_export(ex, time.monotonic() - start, max_tx=max_tx, timeout=timeout, bug=bug)


def check_dsn(dsn: str, max_tx: int | None = None, timeout: float = 600, ndjson: Path | None = None) -> TraceCheck:
    start = time.monotonic()
    ex = export(read_log(dsn))
    if ndjson is not None:
        ndjson.write_text(ex.ndjson())
    return check_export(ex, time.monotonic() - start, max_tx=max_tx, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", required=True, help="the log's Postgres DSN")
    ap.add_argument("--max-tx", type=int, default=None, help="check only the first K transactions")
    ap.add_argument("--ndjson", type=Path, default=None, help="also write the exported trace here")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    res = check_dsn(args.dsn, args.max_tx, args.timeout, args.ndjson)
    print(res.summary())
    if res.accepted:
        return 0
    return 1 if res.failed_step else 2


if __name__ == "__main__":
    sys.exit(main())
