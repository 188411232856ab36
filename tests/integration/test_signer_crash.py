"""The signer (R14) under real crashes: child processes killed with SIGKILL, a real I/O failure, real etcd.

The children are this file run as a script (``python test_signer_crash.py <mode> ...``, see
``child`` at the bottom): they sign through ``Signer`` and print every signature they got
back, flushing stdout, which is the moment a signature "left the process". After each kill
the journal must hold every printed vote, no tx_id may ever have had two values printed,
and the signer must refuse another value for every printed tx_id.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nacl.signing

SRC = Path(__file__).resolve().parents[2] / "src"
sys.path.insert(0, str(SRC))

from events.errors import InvalidCommand, StoreUnavailable  # noqa: E402
from events.vote import Vote, sign  # noqa: E402
from node.signer import (  # noqa: E402
    ClaimLost,
    ImportResult,
    InstanceClaimed,
    JournalMissing,
    JournalUnavailable,
    Refused,
    Signed,
    Signer,
    SignerLocked,
)

KEY = nacl.signing.SigningKey(b"\x01" * 32)
NODE = "node-a"
KILLS = 30

# the parent side ---------------------------------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)


def wait_ready(p: subprocess.Popen) -> str:
    line = p.stdout.readline()
    assert line.startswith("ready"), f"child did not start: {line!r} {p.stderr.read()}"
    return line


def finish(p: subprocess.Popen, timeout: float = 20) -> tuple[int, list[str]]:
    """Wait for a child; its exit status and the complete lines it printed (a line cut by the kill is dropped)."""
    out, _ = p.communicate(timeout=timeout)
    lines = out.split("\n")
    return p.returncode, lines[:-1]  # the last piece has no newline: empty, or cut off by the kill


def exported(s: Signer) -> dict[str, tuple[int, int, str]]:
    """tx_id -> (value, timestamp_ms, signature hex) of every journaled vote."""
    return {e["tx_id"]: (int(e["value"]), int(e["timestamp_ms"]), e["signature"])
            for e in json.loads(s.export())["data"]}


def journal(path: Path) -> dict[str, tuple[int, int, str]]:
    """The journal's votes, read through a fresh signer (which re-verifies them all)."""
    with Signer.open(path, KEY, NODE) as s:
        return exported(s)


def test_kill_9_at_random_moments_never_loses_a_returned_signature(tmp_path):
    path = tmp_path / "signer.journal"
    rng = random.Random(14)
    printed: dict[str, tuple[int, int, str]] = {}  # every signature that ever left a child
    for run in itertools.count():  # at least KILLS kills, and more on a loaded machine until 200 votes left
        if (run >= KILLS and len(printed) > 200) or run >= 10 * KILLS:
            break
        p = spawn("loop", "--journal", str(path), "--seed", str(run))
        wait_ready(p)
        time.sleep(rng.uniform(0.0, 0.04))
        assert p.poll() is None, p.stderr.read()
        p.send_signal(signal.SIGKILL)
        code, lines = finish(p)
        assert code == -signal.SIGKILL
        for line in lines:
            _, tx, value, ts, sig = line.split()
            vote = (int(value), int(ts), sig)
            assert printed.setdefault(tx, vote) == vote, f"{tx}: two different signed votes left the signer"
        with Signer.open(path, KEY, NODE) as s:  # the restart: open re-verifies every row
            held = exported(s)
            for tx, vote in printed.items():
                assert held.get(tx) == vote, f"run {run}: {tx} was returned as {vote}, journal holds {held.get(tx)}"
            asked = [(tx, (v + 1) % 3) for tx, (v, _, _) in printed.items()]
            assert all(isinstance(o, Refused) for o in s.sign_many(asked, 1)), "another value was signed"
            assert s.journal_size() == len(held)
    assert len(printed) > 200, "the children barely signed: the kills tested little"


def test_a_kill_between_commit_and_return_leaves_a_vote_the_retry_gets_unchanged(tmp_path):
    path = tmp_path / "signer.journal"
    code, lines = finish(spawn("die", "--journal", str(path), "--at", "committed"))
    assert (code, lines) == (-signal.SIGKILL, [])  # nothing left the process...
    with Signer.open(path, KEY, NODE) as s:  # ...but the votes are journaled: a retry returns them as they were
        out = s.sign_many([("tx-a", 1), ("tx-b", 2)], 2000)
        assert out == [Signed(sign(Vote("tx-a", 1, NODE, 1000), KEY), False),
                       Signed(sign(Vote("tx-b", 2, NODE, 1000), KEY), False)]
        assert isinstance(s.sign_many([("tx-a", 3)], 2000)[0], Refused)


def test_kill_9_between_every_two_steps(tmp_path):
    """Every step of create and sign: the journal is whole, nothing returned is missing, retries agree."""
    for at in ("locked", "created-temp", "linked", "read", "signed", "inserted", "committed"):
        path = tmp_path / at / "signer.journal"
        path.parent.mkdir()
        code, lines = finish(spawn("die", "--journal", str(path), "--at", at))
        assert (code, lines) == (-signal.SIGKILL, []), at
        if at in ("locked", "created-temp"):  # creation did not finish: no journal, and none is assumed
            try:
                Signer.open(path, KEY, NODE)
                raise AssertionError(f"{at}: a journal appeared")
            except JournalMissing:
                pass
        expected = {} if at != "committed" else {"tx-a": 1, "tx-b": 2}
        assert {tx: v for tx, (v, _, _) in (journal(path) if path.exists() else {}).items()} == expected, at
        with Signer.open(path, KEY, NODE, create=True) as s:
            out = s.sign_many([("tx-a", 1), ("tx-b", 2)], 2000)
            assert [o.vote.vote.timestamp_ms for o in out] == ([1000, 1000] if expected else [2000, 2000]), at
        assert [p.name for p in path.parent.iterdir() if "creating" in p.name] == [], at


def test_kill_9_during_an_import_imports_all_or_nothing(tmp_path):
    source = tmp_path / "old.journal"
    with Signer.open(source, KEY, NODE, create=True) as s:
        s.sign_many([(f"tx-{i}", i % 3) for i in range(50)], 1000)
        raw = s.export()
    export = tmp_path / "export.json"
    export.write_bytes(raw)
    everything = journal(source)
    for at, existing in (("import-inserted", True), ("import-committed", True),
                         ("created-temp", False), ("linked", False)):
        path = tmp_path / f"{at}-{existing}" / "signer.journal"
        path.parent.mkdir()
        if existing:
            with Signer.open(path, KEY, NODE, create=True) as s:
                s.sign_many([("tx-own", 9)], 500)
        code, _ = finish(spawn("import", "--journal", str(path), "--file", str(export), "--at", at))
        assert code == -signal.SIGKILL, at
        done = at in ("import-committed", "linked")
        if not existing and not done:
            assert not path.exists(), at
            continue
        held = journal(path)
        held.pop("tx-own", None)
        assert held == (everything if done else {}), at


def test_a_second_process_is_refused_naming_the_first_until_it_dies(tmp_path):
    path = tmp_path / "signer.journal"
    p = spawn("hold", "--journal", str(path))
    wait_ready(p)
    try:
        Signer.open(path, KEY, NODE)
        raise AssertionError("two processes opened one journal")
    except SignerLocked as e:
        assert f"pid {p.pid} on host {socket.gethostname()}" in str(e)
        assert e.holder.split(":")[-2] == str(p.pid)
    p.send_signal(signal.SIGKILL)
    finish(p)
    Signer.open(path, KEY, NODE).close()  # the kernel dropped the dead holder's lock


def test_a_failed_commit_stops_the_signer_and_loses_nothing_returned(tmp_path):
    """A real write failure: the child's file size limit (RLIMIT_FSIZE) makes the WAL write fail with EFBIG."""
    path = tmp_path / "signer.journal"
    code, lines = finish(spawn("fsize", "--journal", str(path)))
    assert code == 0, lines
    assert lines[0].startswith("S tx-small ")
    assert lines[1].startswith("JournalUnavailable") and "commit failed" in lines[1]
    assert lines[2].startswith("JournalUnavailable") and "restart" in lines[2]
    held = journal(path)
    assert set(held) == {"tx-small"}  # nothing of the failed call was kept (and none of it was returned)
    with Signer.open(path, KEY, NODE) as s:  # after a restart the same ballots are signed
        assert all(o.fresh for o in s.sign_many([(f"tx-big-{i}", 1) for i in range(3000)], 3000))


def test_one_fsync_per_call_whatever_its_size(tmp_path):
    strace = shutil.which("strace")
    if strace is None:
        import pytest

        pytest.skip("strace not installed")
    path, trace = tmp_path / "signer.journal", tmp_path / "trace"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = subprocess.run([strace, "-f", "-o", str(trace), "-e", "trace=fsync,fdatasync,write", sys.executable,
                        __file__, "fsyncs", "--journal", str(path)], env=env, capture_output=True, timeout=60)
    if r.returncode != 0 and b"ptrace" in r.stderr:
        import pytest

        pytest.skip("ptrace not permitted here")
    assert r.returncode == 0, r.stderr
    calls, syncs, counting = [], 0, False
    for line in trace.read_text().splitlines():
        if '"MARK ' in line:
            if counting:
                calls.append(syncs)
            counting, syncs = True, 0
        elif '"END' in line:
            calls.append(syncs)
            counting = False
        elif counting and ("fsync(" in line or "fdatasync(" in line):
            syncs += 1
    assert calls == [1, 1, 1, 0], calls  # 1, 10 and 500 new ballots: one sync each; a retry: none


# the etcd instance claim -------------------------------------------------------------------------

def acquire(*args, **kwargs):
    """InstanceClaim.acquire, imported here only: the signing children need not load pyetcd and grpc."""
    from node.signer import InstanceClaim

    return InstanceClaim.acquire(*args, **kwargs)


def endpoints(etcd_server) -> str:
    return ",".join(etcd_server.endpoints)


def test_a_second_claim_is_refused_naming_the_first_and_succeeds_after_close(etcd_server, etcd_prefix):
    first = acquire(endpoints(etcd_server), etcd_prefix, NODE, ttl=5)
    try:
        acquire(endpoints(etcd_server), etcd_prefix, NODE, ttl=5)
        raise AssertionError("two claims for one node id")
    except InstanceClaimed as e:
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(e)
        assert e.holder == first.holder.text()
    other = acquire(endpoints(etcd_server), etcd_prefix, "node-b", ttl=5)  # another trustee: fine
    other.close()
    first.close()
    acquire(endpoints(etcd_server), etcd_prefix, NODE, ttl=5).close()


def test_the_claim_of_a_killed_process_expires_with_its_lease(etcd_server, etcd_prefix):
    p = spawn("claim", "--endpoints", endpoints(etcd_server), "--prefix", etcd_prefix, "--ttl", "2")
    wait_ready(p)
    p.send_signal(signal.SIGKILL)
    finish(p)
    killed = time.monotonic()
    try:
        acquire(endpoints(etcd_server), etcd_prefix, NODE, ttl=2)
        raise AssertionError("the dead holder's claim vanished before its lease expired")
    except InstanceClaimed as e:
        assert f"pid {p.pid}" in str(e)
    while True:
        try:
            claim = acquire(endpoints(etcd_server), etcd_prefix, NODE, ttl=2)
            break
        except InstanceClaimed:
            assert time.monotonic() - killed < 6, "the claim outlived its lease"
            time.sleep(0.2)
    claim.close()


def test_a_lost_claim_stops_new_signatures(tmp_path, etcd_server, etcd_prefix):
    import pyetcd

    admin = pyetcd.client(host="127.0.0.1", port=etcd_server.members[0].client_port)
    for lose in ("revoke", "delete"):
        claim = acquire(endpoints(etcd_server), etcd_prefix, NODE, ttl=5)
        with Signer.open(tmp_path / f"{lose}.journal", KEY, NODE, create=True, claim=claim) as s:
            first = s.sign_many([("tx-1", 1)], 1000)[0]
            if lose == "revoke":
                admin.revoke_lease(claim.lease.id)  # as if it expired while we were frozen
            else:
                admin.delete(claim.key)  # an operator deleted it: someone else could claim now
            claim.refresh()
            assert not claim.alive()
            try:
                s.sign_many([("tx-2", 1)], 1000)
                raise AssertionError("signed without a claim")
            except ClaimLost as e:
                assert claim.key in str(e)
            assert s.sign_many([("tx-1", 1)], 2000) == [Signed(first.vote, False)]  # nothing new: still answered
            assert s.counts()["refused_claim_lost"] == 1
        claim.close()
    admin.close()


def test_a_claim_for_another_node_is_refused(tmp_path, etcd_server, etcd_prefix):
    with acquire(endpoints(etcd_server), etcd_prefix, "node-b", ttl=5) as claim:
        try:
            Signer.open(tmp_path / "j", KEY, NODE, create=True, claim=claim)
            raise AssertionError("signed under another node's claim")
        except InvalidCommand as e:
            assert "node-b" in str(e)
    assert not (tmp_path / "j").exists()


def test_an_unreachable_etcd_claims_nothing_and_fails_over(etcd_server, etcd_prefix):
    from devstack.procs import free_port

    dead = f"127.0.0.1:{free_port()}"
    try:
        acquire(dead, etcd_prefix, NODE, ttl=5, timeout=1)
        raise AssertionError("claimed through a dead endpoint")
    except StoreUnavailable:
        pass
    live = etcd_server.endpoints[0].removeprefix("http://")
    for _ in range(3):  # whichever endpoint pyetcd tries first, the claim is taken through the live one
        acquire(f"{dead},{live}", etcd_prefix, NODE, ttl=5, timeout=1).close()


# the children ------------------------------------------------------------------------------------

def _killer(at: str | None):
    def step(name: str) -> None:
        if name == at:
            os.kill(os.getpid(), signal.SIGKILL)
    return step


def _print(outcomes) -> None:
    lines = [f"S {o.vote.vote.tx_id} {o.vote.vote.value} {o.vote.vote.timestamp_ms} {o.vote.signature.hex()}\n"
             for o in outcomes if isinstance(o, Signed)]
    sys.stdout.write("".join(lines))
    sys.stdout.flush()  # from here on the signatures have left the process


def child(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("--journal")
    ap.add_argument("--at")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--file")
    ap.add_argument("--endpoints")
    ap.add_argument("--prefix")
    ap.add_argument("--ttl", type=int, default=2)
    a = ap.parse_args(argv)
    step = _killer(a.at)
    if a.mode == "loop":
        rng = random.Random(a.seed)
        with Signer.open(a.journal, KEY, NODE, create=True) as s:
            print("ready", flush=True)
            fresh = itertools.count()
            while True:  # new tx_ids of this run, mixed with re-asks of a shared pool (retries and conflicts)
                request = {}
                for _ in range(rng.randint(1, 5)):
                    tx = f"tx-{rng.randrange(300)}" if rng.random() < 0.3 else f"r{a.seed}-{next(fresh)}"
                    request[tx] = rng.randrange(3)
                _print(s.sign_many(list(request.items()), time.time_ns() // 1_000_000))
    elif a.mode == "die":
        with Signer.open(a.journal, KEY, NODE, create=True, on_step=step) as s:
            _print(s.sign_many([("tx-a", 1), ("tx-b", 2)], 1000))
    elif a.mode == "import":
        raw = Path(a.file).read_bytes()
        if Path(a.journal).exists():
            with Signer.open(a.journal, KEY, NODE, on_step=step) as s:
                assert s.import_interchange(raw) == ImportResult(50, 0)
        else:
            Signer.create_from_interchange(a.journal, KEY, NODE, raw, on_step=step)[0].close()
    elif a.mode == "hold":
        with Signer.open(a.journal, KEY, NODE, create=True):
            print("ready", flush=True)
            time.sleep(60)
    elif a.mode == "fsize":
        with Signer.open(a.journal, KEY, NODE, create=True) as s:
            _print(s.sign_many([("tx-small", 1)], 1000))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            limit = max(os.path.getsize(f) for f in (a.journal, a.journal + "-wal")) + 8192
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            for _ in range(2):
                try:
                    _print(s.sign_many([(f"tx-big-{i}", 1) for i in range(3000)], 2000))
                except JournalUnavailable as e:
                    print(f"{type(e).__name__}: {e}", flush=True)
    elif a.mode == "fsyncs":
        with Signer.open(a.journal, KEY, NODE, create=True) as s:
            s.sign_many([("warm-up", 1)], 1000)  # the first commit also syncs the new WAL's directory
            for n, size in enumerate((1, 10, 500)):
                os.write(1, f"MARK {size}\n".encode())
                s.sign_many([(f"tx-{n}-{i}", 1) for i in range(size)], 1000)
            os.write(1, b"MARK retry\n")
            s.sign_many([(f"tx-2-{i}", 1) for i in range(500)], 1000)
            os.write(1, b"END\n")
    elif a.mode == "claim":
        claim = acquire(a.endpoints, a.prefix, NODE, ttl=a.ttl)  # noqa: F841  (kept alive by its thread)
        print("ready", flush=True)
        time.sleep(60)


if __name__ == "__main__":
    child(sys.argv[1:])
