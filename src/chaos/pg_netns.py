"""The Patroni primary cut off by the network under an append load (issue 17 item 3, on issue 18's network).

Hosts of a test network (devstack.netns), one namespace each: ``app`` (this harness and the append load),
``e0``-``e2`` (etcd) and ``pg0``-``pg2`` (Patroni + Postgres 15, synchronous, strict). The load
(``chaos.pg_failover.AppendLoad``, the real write path, commit bound 2 s) writes through the multi-host DSN
naming the members' addresses. Then the primary's host is isolated (iptables DROP both ways in every
namespace: its processes run on, nothing reaches them and nothing they send arrives):

- its leader key lapses (it cannot renew it) and the synchronous standby is promoted;
- the isolated primary demotes itself (Patroni: "DCS is not accessible"), seen through its Unix socket,
  which no cut touches;
- appends go on on the new primary (the commit in flight at the cut is given up by the bound, in doubt,
  and retried: its idempotency keys resolve it);
- the cut heals and the old primary rejoins as a standby (pg_rewind if its timeline diverged), holding the
  new primary's log.

``check_log`` then proves every acknowledged vote in the log exactly once, gap-free, chain and audit clean.
The frozen-primary test (tests/ha, SIGSTOP) approximates this on loopback; here the process runs on and
only the packets stop, so the old primary sees its own isolation and acts on it.

Runs in a process of its own (``python -m chaos.pg_netns``), because it moves its main thread into ``app``
before any gRPC thread exists (the etcd client's). Prints one ``RESULT {json}`` line; exits non-zero
(with ``error`` in that line) when something does not hold. Needs root and Patroni (``./dev bootstrap``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import psycopg

from chaos.pg_failover import AppendLoad, check_log
from devstack.etcd import Etcd
from devstack.netns import NETNS_DIR, TestNetwork, enter_netns
from devstack.patroni import SCOPE, Member, PatroniCluster
from devstack.procs import wait_until
from tvote import db

ETCD = ("e0", "e1", "e2")
MEMBERS = ("pg0", "pg1", "pg2")
BOUND_S = 2.0  # the load's commit bound, as in tests/ha
PREFIX = "/tvote/pgnet"
LAST = "SELECT max(position), (SELECT hash FROM events ORDER BY position DESC LIMIT 1) FROM events"


def wait_acks(load: AppendLoad, n: int, timeout: float) -> None:
    wait_until(lambda: len(load.acked()) >= n or load.unexpected, timeout,
         f"{n} acknowledged batches (have {len(load.acked())}; errors {dict(load.errors)})")
    if load.unexpected:
        raise AssertionError(f"unexpected statuses: {load.unexpected}")


def writable_locally(pc: PatroniCluster, m: Member) -> bool | None:
    """Does ``m``'s Postgres take writes, asked through its Unix socket (no network cut applies)?
    None: it does not answer (stopped, restarting)."""
    try:
        with psycopg.connect(pc.local_dsn(m), connect_timeout=2) as c:
            return not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    except psycopg.OperationalError:
        return None


def holds_log(pc: PatroniCluster, m: Member, database: str, want: tuple) -> bool:
    """``m`` is a standby whose log has the primary's entry ``want`` (position, hash): the same log up to there
    (the hash chains every entry before it); the load goes on, so it may hold more."""
    try:
        with psycopg.connect(pc.member_dsn(m, database), connect_timeout=2) as c:
            row = c.execute("SELECT position, hash FROM events WHERE position = %s", (want[0],)).fetchone()
            return bool(c.execute("SELECT pg_is_in_recovery()").fetchone()[0]) and row == want
    except psycopg.OperationalError:
        return False


SCENARIO = "Patroni: primary cut off by the network (netns)"


def run(base: Path, out: dict, warmup: int = 20, after: int = 20, min_cut_s: float = 0.0,
        parameters: dict[str, str] | None = None) -> dict:
    """The scenario; its figures go into ``out`` as they are measured (a failure leaves what was)."""
    t_start = time.monotonic()
    net = TestNetwork(["app", *ETCD, *MEMBERS]).start()
    out["run_id"] = net.run_id
    out["ns_inodes"] = [os.stat(NETNS_DIR / ns).st_ino for ns in net.namespaces]
    out["base"] = str(base)
    try:
        with enter_netns(net["app"].ns):  # this thread, before any gRPC: every address one hop away
            etcd = Etcd(size=3, base_dir=base / "etcd", hosts=[net[e].ip for e in ETCD],
                        prefixes=[net[e].prefix for e in ETCD])
            pc = PatroniCluster(etcd.endpoints, size=3, base_dir=base / "patroni", fsync=False,
                                scope=f"{SCOPE}-net", hosts=[net[m].ip for m in MEMBERS],
                                prefixes=[net[m].prefix for m in MEMBERS], die_with_parent=True,
                                parameters=parameters)
            out["parameters"] = parameters or {}
            load = None
            try:
                etcd.start()  # first: Patroni keeps its leader key there
                t0 = time.monotonic()
                pc.start()
                pc.create_database("tvote")
                db.upgrade(pc.url("tvote"))
                out["cluster_start_s"] = round(time.monotonic() - t0, 1)
                dsn = pc.dsn("tvote", user=db.APP_ROLE)
                out["dsn"] = dsn
                load = AppendLoad(dsn, etcd.endpoints[0], PREFIX, commit_bound_s=BOUND_S)
                load.found()
                load.start()
                wait_acks(load, warmup, 60)

                old, sync = pc.primary(), pc.sync_standby()
                assert old is not None and sync is not None and sync is not old, (old, sync)
                host = next(h for h in net if h.ip == old.host)
                out["old_primary"], out["sync_standby"] = old.name, sync.name
                acked_before = len(load.acked())

                # the cut
                at = time.monotonic()
                net.isolate(host)
                others = [m for m in pc.members if m is not old]
                new = None
                deadline = at + 60
                while "promoted_at_s" not in out or "old_demoted_at_s" not in out:  # whichever comes first
                    assert time.monotonic() < deadline, f"after 60 s: {out}"
                    if "old_demoted_at_s" not in out and writable_locally(pc, old) is not True:
                        out["old_demoted_at_s"] = round(time.monotonic() - at, 2)
                    if new is None and (new := pc.primary(among=others)) is not None:
                        out["promoted_at_s"], out["promoted"] = round(time.monotonic() - at, 2), new.name
                    time.sleep(0.1)
                assert new is sync, f"Patroni promoted {new.name}, not the synchronous standby {sync.name}"
                wait_acks(load, max(acked_before, len(load.acked())) + after, 60)
                out["appends_on_new_while_cut"] = sum(b.acked_at > at for b in load.acked())
                view = net[host.name].call(old.api, "/patroni")  # its own view, from inside its host
                out["old_view_while_cut"] = {k: (view or {}).get(k) for k in ("role", "state")}
                if (left := min_cut_s - (time.monotonic() - at)) > 0:
                    time.sleep(left)
                assert writable_locally(pc, old) is not True, f"{old.name} takes writes again while cut off"

                # the heal
                out["cut_s"] = round(time.monotonic() - at, 2)
                net.heal()
                healed = time.monotonic()
                with psycopg.connect(dsn) as c:
                    want = c.execute(LAST).fetchone()
                wait_until(lambda: holds_log(pc, old, "tvote", want), 150,
                           f"{old.name} to rejoin as a standby with the log")
                out["rejoined_after_heal_s"] = round(time.monotonic() - healed, 2)
                wait_until(lambda: pc.streaming() == len(pc.members) - 1 and pc.sync_standby(), 60, "both standbys")
                out["roles_after"] = pc.roles()
                assert pc.primary() is new, f"{new.name} is no longer the primary after the heal: {pc.roles()}"
                wait_acks(load, len(load.acked()) + 5, 30)  # and appends still go on
                load.stop()
                figures = load.figures(at)
                out.update({k: figures[k] for k in ("acked_batches", "acked_votes", "seconds_without_appends",
                                                    "recovery_s", "retried_batches", "retried_found_in_log",
                                                    "retried_appended", "errors", "unexpected")})
                log = old.log_file.read_text(errors="replace")
                out["old_rewound"] = "running pg_rewind from" in log
                out["old_demote_line"] = next((ln.split(": ", 1)[-1][:120] for ln in log.splitlines()
                                               if "demoting self because DCS is not accessible" in ln), None)
                check = check_log(dsn, load)
                out["events"], out["last_position"] = check.events, check.last_position
                out["votes_lost"] = len(check.lost)
                out["duplicated_votes"] = len(check.duplicated_votes)
                out["gaps"] = len(check.gaps)
                out["duplicate_keys"] = check.duplicate_keys
                out["audit_findings"] = check.audit_findings[:5]
                out["held"] = check.held and not figures["unexpected"] and all(
                    set(b.statuses) <= {"appended", "duplicate"} for b in load.acked() if b.retries)
                assert out["held"], check
            except BaseException:
                for m in pc.members:  # what each member said last: the why of a failure
                    if m.log_file.exists():
                        tail = [x for x in m.log_file.read_text(errors="replace").splitlines() if "no action" not in x]
                        print(f"--- {m.name} ({m.host}) patroni.log", *tail[-25:], sep="\n", file=sys.stderr)
                raise
            finally:
                if load is not None:
                    load.stop()
                pc.destroy()
                etcd.destroy()
    finally:
        net.close()
    out["secs"] = round(time.monotonic() - t_start, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m chaos.pg_netns", description=__doc__.split("\n")[0])
    ap.add_argument("--warmup", type=int, default=20, help="batches acknowledged before the cut")
    ap.add_argument("--after", type=int, default=20, help="batches acknowledged on the new primary while cut")
    ap.add_argument("--keep", type=Path, default=None, help="run in this directory and keep it (the members' logs)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a Postgres setting for every member (e.g. wal_sender_timeout=5s); default: none")
    ap.add_argument("--min-cut", type=float, default=0.0, help="keep the cut at least this many seconds")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tvote-pgnet-") as tmp:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        os.chmod(tmp, 0o755)  # the postgres user runs Patroni under it
        out: dict = {"scenario": SCENARIO, "held": False, "error": None}
        try:
            run(Path(tmp), out, args.warmup, args.after, args.min_cut, dict(x.split("=", 1) for x in args.set))
        except Exception as e:
            traceback.print_exc()
            out["held"], out["error"] = False, f"{type(e).__name__}: {e}"[:1000]
    print("RESULT " + json.dumps(out), flush=True)
    return 0 if out.get("held") and not out.get("error") else 1


if __name__ == "__main__":
    sys.exit(main())
