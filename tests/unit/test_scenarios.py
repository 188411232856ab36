"""Data-driven protocol scenarios (testdata/*.txt), in the manner of etcd raft's testdata.

Each file: `setup n=N t=T [deadline=MS floor=F penalty=P reward=R banafter=K]`, then commands after `> `, each
followed by one line with the events it must emit (or `! ErrorName`), and `= ` lines that
check the state. A reader can check each scenario against RESOLUTIONS.md without the code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import bootstrap, run

from events import errors
from events import rules as r

DATA = Path(__file__).parent / "testdata"


def summarize(e) -> str:
    match e:
        case r.ViolationDetected():
            return f"Violation:{e.kind}:{e.node_id}"
        case r.NodeBanned():
            return f"Banned:{e.node_id}:{e.reason}"
        case r.TransactionAborted():
            return f"Aborted:{e.reason}"
        case r.ThresholdReached():
            return f"Threshold:{e.value}"
        case r.ReputationChanged():
            return f"Reputation:{e.node_id}:{e.score}"
    return e.TYPE


def command(words: list[str], ts: list) -> r.Command:
    def node(i: str):
        return ts[int(i) - 1]

    op, *a = words
    kw = dict(w.split("=") for w in a if "=" in w)
    a = [w for w in a if "=" not in w]
    now = int(kw.get("now", 1000))
    if op == "vote":
        return node(a[0]).receive(a[1], int(a[2]), now=now, ts=int(kw.get("ts", 1)))
    if op == "forge":  # a[0] authors a vote claiming to be from a[1], signed with a[0]'s key, in its envelope
        return node(a[0]).forge(node(a[1]).node_id, a[2], int(a[3]), now=now, envelope="unproven" not in a)
    if op == "outsider":
        return r.ReceiveVote(node(a[0]).vote(a[1], int(a[2])), "peer-unknown", now)
    if op == "deadline":
        return r.CheckDeadline(a[0], now)
    if op == "reevaluate":
        return r.Reevaluate(a[0])
    if op == "claim":
        return r.StartSubmission(a[0], "submitter-1", int(a[1]))
    if op == "signed":
        return r.RecordSigned(a[0], int(a[1]), 31337, "0xabc", int(kw.get("nonce", 0)), a[2], "0x00")
    if op == "broadcast":
        return r.RecordBroadcast(a[0], int(a[1]), a[2])
    if op == "confirm":
        return r.RecordConfirmed(a[0], int(a[1]), a[2], 1)
    if op == "unban":
        return r.Unban(node(a[0]).node_id, "alice", "cleared")
    if op == "remove":
        return r.RemoveMember(node(a[0]).node_id, "alice", "retired")
    raise ValueError(f"unknown scenario command {op}")


def check(ledger: r.Ledger, words: list[str]) -> None:
    what, *a = words
    if what == "status":
        assert ledger.txs[a[0]].status == a[1]
    elif what == "banned":
        got = sorted(n for n, m in ledger.cluster.members.items() if m.banned)
        assert got == sorted(f"node-{i}" for i in a if i != "-")
    elif what == "reputation":
        assert ledger.cluster.members[f"node-{a[0]}"].reputation == int(a[1])
    else:
        raise ValueError(what)


def scenario_files() -> list[Path]:
    return sorted(DATA.glob("*.txt"))


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    setup = dict(w.split("=") for w in lines[0].split()[1:])
    extra = {k2: int(setup[k1]) for k1, k2 in
             (("deadline", "deadline_ms"), ("floor", "reputation_floor"), ("penalty", "silent_penalty"),
              ("reward", "participation_reward"), ("banafter", "floor_ban_after"))
             if k1 in setup}
    ledger, ts = bootstrap(int(setup["n"]), int(setup["t"]), **extra)
    i = 1
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("= "):
            check(ledger, ln[2:].split())
            i += 1
            continue
        assert ln.startswith("> "), f"{path.name}: expected a command, got {ln!r}"
        expected = lines[i + 1]
        cmd = command(ln[2:].split(), ts)
        if expected.startswith("! "):
            err = getattr(errors, expected[2:])
            before = (ledger.cluster, dict(ledger.txs))
            with pytest.raises(err):
                run(ledger, cmd)
            assert (ledger.cluster, ledger.txs) == before, "a rejected command changed state"
        else:
            got = " ".join(summarize(e) for e in run(ledger, cmd)) or "-"
            assert got == expected, f"{path.name}: `{ln}`\n  expected: {expected}\n  got:      {got}"
        i += 2
