"""The seed's chaos scenarios (section 14.2) on real processes, each returning figures, not just pass/fail.

Every scenario runs the same way: start N trustee processes on a fresh log, offer transactions at a
rate while a fault is injected and healed, let the cluster settle, then check the invariants
(``chaos.invariants``). Figures per scenario: invariants held, recovery time (heal -> every
transaction offered before the heal settled on every honest node), votes and transactions lost.

How each fault maps to a real one (no ``tc netem`` on this machine):

- message loss: ``chaos.trustee --drop-rate`` drops that fraction of *accepted gossip deliveries* on every
  node, after the router handled them (so GossipSub does not retransmit them). That is packet loss
  above TCP, where it cannot be recovered by the transport: stricter than 20 % IP packet loss, which
  TCP would hide as latency. The cluster recovers through the shared log (R13).
- frozen process: the minority's processes are SIGSTOPped. A frozen node neither sends nor receives,
  nor reaches etcd or Postgres; its TCP connections stay open and its etcd lease runs out (10 s). It
  is not a network partition (the process stops, not a link): those, with links really cut, one-way
  cuts, packet loss and bandwidth limits, are ``chaos.netchaos`` on the namespace network.
- clock skew: two node processes run with the clocks their code reads shifted +5 s / -5 s (fixed offset,
  no drift, monotonic clocks untouched) by ``chaos.skew``; libfaketime breaks CPython's timed waits here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from chaos import invariants, skew
from chaos.harness import (
    ChaosEnv,
    Load,
    Scope,
    default_threshold,
    freeze,
    honest,
    thaw,
    views,
    wait_converged,
    wait_for,
)
from devstack.patroni import PatroniCluster
from devstack.trustees import TrusteeCluster
from events import rules

SETTLED = set(rules.FINAL) | {rules.THRESHOLD_REACHED}


_SHORT = {rules.THRESHOLD_REACHED: "TR", rules.CONFIRMED: "CONF", rules.ABORTED_BYZANTINE: "ABORT_BYZ",
          rules.ABORTED_NO_QUORUM: "ABORT_NQ", rules.EXPIRED: "EXP", rules.COLLECTING: "COLL",
          rules.SUBMITTING: "SUB"}


@dataclass
class Result:
    name: str
    n: int
    t: int
    txs: int
    rate: float
    held: bool = False
    recovery_s: float | None = None
    settle_s: float | None = None
    votes_lost: int = 0
    txs_lost: int = 0
    acked: int = 0
    lost_in_flight: int = 0  # of votes_lost: acked by a node less than 2 s before it was SIGKILLed
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    report: invariants.InvariantReport | None = None
    counters: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    exited: list[str] = field(default_factory=list)  # nodes that exited by themselves during the fault
    log_dsn: str = ""  # the scenario's log (its own database), for checks after the run (tla/trace_check.py)
    trace: dict[str, Any] = field(default_factory=dict)  # the trace check's sizes and verdict, if run
    figures: dict[str, Any] = field(default_factory=dict)  # a fault's own measurements (e.g. a failover's)

    def row(self) -> dict[str, Any]:
        rec = "-" if self.recovery_s is None else f"{self.recovery_s:.1f}"
        return {"scenario": self.name, "N/t": f"{self.n}/{self.t}", "txs": self.txs, "rate": self.rate,
                "held": "yes" if self.held else "NO", "recovery_s": rec,
                "settle_s": "-" if self.settle_s is None else f"{self.settle_s:.1f}",
                "votes_lost": self.votes_lost, "txs_lost": self.txs_lost, "acked": self.acked,
                "end_states": " ".join(f"{_SHORT.get(k, k)}={v}" for k, v in sorted(
                    (self.report.statuses if self.report else {}).items())),
                "bans": ",".join(f"{n}:{r}" for n, r in sorted((self.report.byzantine_bans if self.report else {})
                                                                .items())) or "-",
                "secs": f"{self.seconds:.0f}", "notes": "; ".join(self.notes)}


@dataclass
class Ctx:
    """What a fault function gets: the servers, this run's cluster and load, and where to put notes."""

    env: ChaosEnv
    scope: Scope
    cluster: TrusteeCluster
    load: Load
    result: Result
    healed_at: float | None = None
    recovery: float | None = None
    excluded: set[int] = field(default_factory=set)  # nodes whose views are not compared (left dead)
    killed_at: dict[str, float] = field(default_factory=dict)  # node_id -> monotonic time of its SIGKILL

    def note(self, text: str) -> None:
        self.result.notes.append(text)

    def wait_offered(self, fraction: float, timeout: float = 60) -> None:
        """Block until the load driver offered this fraction of the run's transactions (mid-stream)."""
        goal = max(1, int(self.result.txs * fraction))
        wait_for(lambda: len(self.load.offers) >= goal, timeout, 0.05)

    def healed(self, nodes: list[int] | None = None, timeout: float = 90) -> None:
        """Mark the heal; measure until every transaction offered so far has settled on the honest nodes."""
        self.healed_at = time.monotonic()
        if self.result.exited:
            timeout = min(timeout, 30)  # acked votes died with the nodes: the backlog may never settle
        backlog = self.load.tx_ids
        watch = [i for i in (nodes if nodes is not None else honest(self.cluster)) if i not in self.excluded]
        self.recovery = wait_converged(self.cluster, watch, backlog, SETTLED, timeout, abort_on_exit=True)
        if self.recovery is None and any(self.cluster.trustees[i].proc.poll() is not None for i in watch):
            self.revive("after the heal")
            self.recovery = wait_converged(self.cluster, watch, backlog, SETTLED, 30)
            if self.recovery is not None:
                self.recovery = time.monotonic() - self.healed_at
        if self.recovery is None:
            self.note(f"backlog of {len(backlog)} txs not settled {timeout:.0f}s after heal")

    def revive(self, when: str) -> None:
        """Nodes that exited by themselves during a fault are a finding; restart them so the run can settle."""
        dead = [i for i, tr in enumerate(self.cluster.trustees) if tr.proc.poll() is not None]
        if not dead:
            return
        names = [self.cluster.trustees[i].node_id for i in dead]
        self.result.exited += names
        self.note(f"{names} exited {when} (restarted)")
        now = time.monotonic()
        for i in dead:
            self.killed_at.setdefault(self.cluster.trustees[i].node_id, now)  # acks in flight died with it
            self.load.down.add(i)
        alive = [i for i in range(len(self.cluster.trustees)) if i not in dead]
        if not alive:  # restart() bootstraps from live peers: bring the first back as a fresh cluster head
            first = self.cluster.trustees[dead[0]]
            self.cluster.start_node(first, [])
            dead = dead[1:]
            self.load.retry(self.cluster.trustees.index(first))
        for i in dead:
            self.cluster.restart(i)
            self.load.retry(i)

    def log_position(self) -> int | None:
        try:
            with psycopg.connect(self.scope.owner_dsn, connect_timeout=2) as c:
                return c.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
        except psycopg.Error:
            return None


Fault = Callable[[Ctx], None]


def run(env: ChaosEnv, name: str, fault: Fault | None = None, *, n: int = 5, t: int | None = None, txs: int = 30,
        rate: float = 5.0, byzantine: dict[int, str] | None = None, deadline_ms: int = 120_000,
        etcd_member: int = 0, wrappers: dict[int, list[str]] | None = None, drop_rate: float = 0.0,
        settle_timeout: float = 90, chain: Any = None, submitter: Callable[[Ctx], Any] | None = None,
        base_dir: Path | None = None) -> Result:
    """One scenario end to end; never raises for a broken invariant (the result says so)."""
    t = t or default_threshold(n)
    res = Result(name, n, t, txs, rate)
    t0 = time.monotonic()
    scope = env.scope()
    res.log_dsn = scope.owner_dsn
    cluster = TrusteeCluster(n, t, scope.app_dsn, env.endpoint(etcd_member), scope.prefix, byzantine=byzantine,
                             deadline_ms=deadline_ms, base_dir=base_dir, die_with_parent=True,
                             hosts=env.trustee_hosts(n))
    for i, tr in enumerate(cluster.trustees):
        tr.wrapper = list((wrappers or {}).get(i, []))
        tr.drop_rate = drop_rate
    load: Load | None = None
    sub_handle = None
    ctx_killed: dict[str, float] = {}
    try:
        cluster.start()
        load = Load(cluster, rate)
        ctx = Ctx(env, scope, cluster, load, res, killed_at=ctx_killed)
        if submitter is not None:
            sub_handle = submitter(ctx)
        load.start(txs)
        if fault is not None:
            fault(ctx)
        load.join(txs / rate + 120)
        ctx.revive("during the run")  # a node that died after the heal check is a finding too
        load.drain(lambda i: i not in ctx.excluded and cluster.trustees[i].proc.poll() is None, 45.0)
        watch = [i for i in honest(cluster) if i not in ctx.excluded]
        ok = rules.FINAL if chain is not None else SETTLED
        if res.exited:
            settle_timeout = min(settle_timeout, 20)
        settle0 = time.monotonic()
        took = wait_converged(cluster, watch, load.tx_ids, set(ok), settle_timeout)
        res.settle_s = None if took is None else time.monotonic() - settle0
        if took is None:
            res.notes.append(f"not settled within {settle_timeout:.0f}s")
        res.recovery_s = ctx.recovery
        node_views = views(cluster, watch, load.tx_ids)
        for i in watch:
            for k, v in cluster.counters(i).items():
                if isinstance(v, int):
                    res.counters[k] = res.counters.get(k, 0) + v
    except Exception as e:  # a harness failure is a result too: the table must show it
        res.error = f"{type(e).__name__}: {e}"
        res.notes.append(res.error[:200])
        node_views = {}
    finally:
        if sub_handle is not None:
            with contextlib.suppress(Exception):
                sub_handle.stop()
        for i in range(n):
            thaw(cluster, i)
        if load is not None:
            load.close()
        took_exit = cluster.destroy()
        try:
            env.heal_all()
        except TimeoutError as e:  # reported; the log is read below all the same
            res.notes.append(f"servers not healed after the run: {e}")
    if took_exit and max(took_exit.values()) >= 30:
        res.notes.append(f"slow SIGTERM exit {max(took_exit.values()):.0f}s")
    byz = {cluster.trustees[i].node_id for i in (byzantine or {})}
    offered = load.tx_ids if load else []
    rep = invariants.check(scope.app_dsn, scope.owner_dsn, views=node_views, byzantine=byz,
                           acked=load.acks if load else [], offered=offered, chain=chain,
                           submitter=chain is not None)
    res.report = rep
    res.acked = rep.acked
    res.votes_lost = rep.votes_lost
    res.txs_lost = rep.txs_lost
    res.lost_in_flight = sum(1 for a in rep.lost_acks
                             if a.node_id in ctx_killed and 0 <= ctx_killed[a.node_id] - a.at < 2.0)
    if rep.lost_acks:
        res.notes.append(f"{res.votes_lost} acked vote(s) missing from the log "
                         f"({res.lost_in_flight} acked <2 s before their node's SIGKILL)")
    res.held = rep.ok and res.error is None
    if load and load.failed_casts:
        codes = ", ".join(f"{c or 'no answer'}: {k}" for c, k in sorted(load.refusals.items()))
        res.notes.append(f"{load.failed_casts} casts refused while faulted (retried; {codes})")
    res.seconds = time.monotonic() - t0
    return res


# --- faults ---------------------------------------------------------------------------------------------


def crash_restart(node: int = 1, down_s: float = 3.0) -> Fault:
    """SIGKILL one node mid-stream, restart it with the same key after ``down_s``."""

    def fault(ctx: Ctx) -> None:
        ctx.wait_offered(0.3)
        ctx.load.down.add(node)
        ctx.cluster.kill(node)
        ctx.killed_at[ctx.cluster.trustees[node].node_id] = time.monotonic()
        ctx.note(f"trustee-{node + 1} SIGKILLed at tx {len(ctx.load.offers)}")
        time.sleep(down_s)
        t0 = time.monotonic()
        ctx.cluster.restart(node)
        ctx.note(f"restart to ready {time.monotonic() - t0:.1f}s")
        ctx.load.retry(node)
        ctx.healed()

    return fault


def frozen(nodes: tuple[int, ...] = (1,), frozen_s: float = 12.0) -> Fault:
    """SIGSTOP a minority (frozen processes: cut off from peers and stores alike), SIGCONT after ``frozen_s``."""

    def fault(ctx: Ctx) -> None:
        ctx.wait_offered(0.3)
        for i in nodes:
            ctx.load.down.add(i)
            freeze(ctx.cluster, i)
        ctx.note(f"{len(nodes)} of {ctx.result.n} SIGSTOPped {frozen_s:.0f}s")
        time.sleep(frozen_s)
        for i in nodes:
            thaw(ctx.cluster, i)
        time.sleep(5)  # a thawed node whose etcd lease expired meets it on its next etcd call
        ctx.revive("after SIGCONT")
        for i in nodes:
            ctx.load.retry(i)
        ctx.healed()

    return fault


def etcd_kill(members: tuple[int, ...], down_s: float = 5.0) -> Fault:
    """SIGKILL etcd members mid-stream, restart them; records appends made while they were down."""

    def fault(ctx: Ctx) -> None:
        ctx.wait_offered(0.3)
        leader = etcd_leader(ctx.env)
        ctx.note(f"killed {[ctx.env.etcd.members[m].name for m in members]}, leader was {leader}")
        for m in members:
            ctx.env.etcd.kill_member(m)
        p0 = ctx.log_position()
        time.sleep(down_s)
        p1 = ctx.log_position()
        ctx.note(f"etcd member(s) {list(members)} down {down_s:.0f}s: {None if p0 is None else p1 - p0} "
                 f"events appended meanwhile")
        for m in members:
            ctx.env.etcd.restart_member(m)
        wait_for(ctx.env.etcd.healthy, 30)
        ctx.revive("while etcd was faulted")
        ctx.healed()

    return fault


def etcd_leader(env: ChaosEnv) -> str | None:
    """The etcd member that leads right now (whether the kill forces an election matters)."""
    import pyetcd

    for m in env.etcd.members:
        try:
            c = pyetcd.client(host=m.host, port=m.client_port, timeout=2)
            try:
                return str(c.status().leader.name)
            finally:
                c.close()
        except Exception:  # that member is down: ask the next
            continue
    return None


def lonely(node: int = 0, count: int = 8) -> Fault:
    """One node's API opens transactions nobody else votes on (an incident: it once got every other trustee
    banned, R9 as first read). They must expire, and blame nobody."""

    def fault(ctx: Ctx) -> None:
        ctx.wait_offered(0.2)
        codes = [ctx.cluster.cast(node, f"lonely_{k}", 1)[0] for k in range(count)]
        ctx.note(f"trustee-{node + 1} opened {count} transactions alone (answers {sorted(set(codes))})")
        ctx.healed()

    return fault


def postgres_kill(down_s: float = 5.0) -> Fault:
    """``pg_ctl stop -m immediate`` (a crash: no checkpoint) mid-stream, start again after ``down_s``."""

    def fault(ctx: Ctx) -> None:
        ctx.wait_offered(0.3)
        ctx.env.pg.stop("immediate")
        time.sleep(down_s)
        ctx.env.pg.start()
        ctx.revive("while Postgres was down")
        ctx.healed()

    return fault


def patroni_primary_kill(down_s: float = 5.0) -> Fault:
    """kill -9 of the Patroni primary (its Patroni and every Postgres process: a machine crash) mid-stream.

    The synchronous standby is promoted once the leader key lapses; the nodes, the submitter and the
    projector find it through their multi-host DSN. The old primary starts again after ``down_s`` and
    rejoins as a standby (pg_rewind). Notes: when the standby was promoted and when the log grew again.
    """

    def fault(ctx: Ctx) -> None:
        pc = _patroni(ctx, "patroni_primary_kill")
        ctx.wait_offered(0.3)
        old = pc.primary()
        if old is None:
            raise RuntimeError("no Patroni primary to kill")
        t0 = time.monotonic()
        pc.kill_member(old)
        new = pc.wait_primary(60, other_than=old)
        promoted = time.monotonic() - t0
        at = ctx.log_position()
        grew = wait_for(lambda: (p := ctx.log_position()) is not None and at is not None and p > at, 60, 0.05)
        resumed = time.monotonic() - t0
        ctx.result.figures.update(promoted_s=round(promoted, 2), no_appends_s=round(resumed, 2) if grew else None)
        ctx.note(f"primary {old.name} SIGKILLed at tx {len(ctx.load.offers)}; {new.name} promoted after "
                 f"{promoted:.1f} s; appends resumed after {resumed:.1f} s" if grew else "appends did not resume")
        time.sleep(max(0.0, down_s - resumed))
        pc.heal()
        ctx.note(f"{old.name} back as a standby {time.monotonic() - t0:.0f} s after the kill")
        ctx.revive("during the failover")
        ctx.healed()

    return fault


def _patroni(ctx: Ctx, scenario: str) -> PatroniCluster:
    pc = ctx.env.pg
    if not isinstance(pc, PatroniCluster):
        raise TypeError(f"{scenario} needs ChaosEnv(postgres='patroni')")
    return pc


def _appends_resume(ctx: Ctx, t0: float, timeout: float = 60) -> float | None:
    """Seconds from ``t0`` until the log grows past where it is now (None: it did not within ``timeout``)."""
    at = ctx.log_position()
    grew = wait_for(lambda: (p := ctx.log_position()) is not None and at is not None and p > at, timeout, 0.05)
    return round(time.monotonic() - t0, 2) if grew else None


def patroni_switchover() -> Fault:
    """A planned switchover (Patroni's REST ``POST /switchover``) to the synchronous standby, mid-stream.

    Patroni stops the old primary (its backends' connections drop, commits waiting in SyncRep are in
    doubt), promotes the standby and the old primary follows it. Notes: how long until the log grew again.
    """

    def fault(ctx: Ctx) -> None:
        pc = _patroni(ctx, "patroni_switchover")
        ctx.wait_offered(0.3)
        old = pc.primary()
        t0 = time.monotonic()
        new = pc.switchover()
        switched = time.monotonic() - t0
        resumed = _appends_resume(ctx, t0)
        ctx.result.figures.update(switchover_s=round(switched, 2), no_appends_s=resumed)
        ctx.note(f"switchover {old.name if old else '?'} -> {new.name} in {switched:.1f} s; appends resumed after "
                 f"{resumed} s")
        pc.heal()
        ctx.revive("during the switchover")
        ctx.healed()

    return fault


def patroni_standby_kill(down_s: float = 5.0) -> Fault:
    """kill -9 of the synchronous standby (a machine crash) while the primary runs, mid-stream.

    The other standby becomes synchronous on Patroni's next loop; appends wait for about that long and go
    on without a failover. The killed member starts again after ``down_s`` and streams again.
    """

    def fault(ctx: Ctx) -> None:
        pc = _patroni(ctx, "patroni_standby_kill")
        ctx.wait_offered(0.3)
        primary, sync = pc.primary(), pc.sync_standby()
        if primary is None or sync is None:
            raise RuntimeError("no primary and synchronous standby to start from")
        t0 = time.monotonic()
        pc.kill_member(sync)
        took_over = wait_for(lambda: (s := pc.sync_standby()) is not None and s is not sync, 30, 0.1)
        replaced = round(time.monotonic() - t0, 2) if took_over else None
        resumed = _appends_resume(ctx, t0)
        still = pc.primary() is primary
        ctx.result.figures.update(sync_replaced_s=replaced, no_appends_s=resumed, failover=not still)
        ctx.note(f"sync standby {sync.name} SIGKILLed; another synchronous after {replaced} s; log grew after "
                 f"{resumed} s; primary {'unchanged' if still else 'CHANGED'}")
        time.sleep(down_s)
        pc.heal()
        ctx.revive("while a standby was down")
        ctx.healed()

    return fault


def patroni_primary_freeze(frozen_s: float = 15.0) -> Fault:
    """The primary cut off, by stopping it: SIGSTOP to its Patroni, postmaster and every backend, mid-stream.

    Nothing of it answers; the nodes' calls to it hang on open connections until the commit bound gives
    them up (in doubt), the leader key lapses and the synchronous standby is promoted. After ``frozen_s``
    it runs on: until its Patroni demotes it, it still takes connections as a primary, but its commits
    wait for a standby it no longer has, so none is acknowledged. (A network cut needs Patroni on the
    namespace network, not built.)
    """

    def fault(ctx: Ctx) -> None:
        pc = _patroni(ctx, "patroni_primary_freeze")
        ctx.wait_offered(0.3)
        old = pc.primary()
        if old is None:
            raise RuntimeError("no Patroni primary to freeze")
        t0 = time.monotonic()
        pc.freeze_member(old)
        try:
            new = pc.wait_primary(60, other_than=old)
            promoted = time.monotonic() - t0
            resumed = _appends_resume(ctx, t0)
            time.sleep(max(0.0, frozen_s - (time.monotonic() - t0)))
        finally:
            pc.thaw_member(old)
        thawed = time.monotonic() - t0
        demoted = wait_for(lambda: pc.roles().get(old.name) in ("replica", "sync_standby"), 90, 0.2)
        back = round(time.monotonic() - t0, 2) if demoted else None
        ctx.result.figures.update(promoted_s=round(promoted, 2), no_appends_s=resumed, thawed_s=round(thawed, 1),
                                  old_primary_standby_s=back)
        ctx.note(f"primary {old.name} frozen; {new.name} promoted after {promoted:.1f} s; appends resumed after "
                 f"{resumed} s; thawed at {thawed:.0f} s, a standby again at {back} s")
        leader = pc.roles()
        if leader.get(old.name) in ("leader", "master", "primary"):
            # Patroni before 3.0.3 (Debian's 3.0.2) put the leader key unconditionally after a stall: the thawed
            # member took the key back and the promoted one demoted (docs/decisions.md). Say so; check the log.
            ctx.note(f"{old.name} took the leader key back after the thaw: {new.name} demoted ({leader})")
        try:
            pc.heal()
        except TimeoutError as e:  # the invariants still read the log: what was lost is the finding
            ctx.note(f"cluster not healed: {e}")
        ctx.revive("while the primary was frozen")
        ctx.healed()

    return fault


# --- the submitter ------------------------------------------------------------------------------------


@dataclass
class SubmitterRig:
    """anvil + a deployed ThresholdRecord + ``python -m submitter`` processes against this run's log."""

    base: Path
    anvil: Any = None
    client: Any = None
    key_file: Path | None = None
    procs: list[Any] = field(default_factory=list)

    def start_chain(self) -> SubmitterRig:
        from eth_account import Account

        from chain import ThresholdRecordClient, make_web3
        from devstack.anvil import Anvil, find_anvil

        self.base.mkdir(parents=True, exist_ok=True)
        self.anvil = Anvil(binary=find_anvil(), state_path=self.base / "anvil.json", log_path=self.base / "anvil.log")
        self.anvil.start()
        owner, sub = Account.from_key(self.anvil.private_key(0)), Account.from_key(self.anvil.private_key(1))
        self.client = ThresholdRecordClient.deploy(make_web3(self.anvil.url), owner, [sub.address],
                                                   chain_id=self.anvil.chain_id)
        self.key_file = self.base / "submitter.key"
        self.key_file.write_text(self.anvil.private_key(1))
        self.key_file.chmod(0o600)
        return self

    def spawn(self, ctx: Ctx, *extra: str) -> Any:
        return self.launch(ctx.cluster, ctx.scope.app_dsn, ctx.env.endpoint(0), ctx.scope.prefix, *extra)

    def launch(self, cluster: TrusteeCluster, dsn: str, etcd_endpoint: str, prefix: str, *extra: str) -> Any:
        """One more ``python -m submitter`` process on this chain for ``cluster``'s log (admitted first, R13)."""
        import os
        import subprocess
        import sys

        from devstack.trustees import SRC

        i = len(self.procs)
        cluster.admit_submitter(f"chaos-sub-{i}", self.key_file.read_text())  # its log key (R13)
        endpoint = etcd_endpoint.removeprefix("http://")
        argv = [sys.executable, "-m", "submitter", "--dsn", dsn, "--etcd", endpoint,
                "--etcd-prefix", prefix, "--rpc", self.anvil.url, "--contract", self.client.address,
                "--key-file", str(self.key_file), "--chain-id", str(self.anvil.chain_id), "--confirmations", "0",
                "--lock-ttl", "3", "--name", f"chaos-sub-{i}", "--stuck-after", "2", *extra]
        log = open(self.base / f"submitter-{i}.log", "ab")  # noqa: SIM115 - owned by the process
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1"})
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except Exception:
                    p.kill()
                    p.wait()

    def close(self) -> None:
        self.stop()
        if self.anvil is not None:
            self.anvil.close()


def submitter_crash(rig: SubmitterRig, kills: int = 3) -> tuple[Callable[[Ctx], Any], Fault]:
    """A submitter SIGKILLed at random moments while consensus flows; a fresh one is started after each."""
    import random

    rng = random.Random(8)

    def start(ctx: Ctx) -> SubmitterRig:
        rig.spawn(ctx)
        return rig

    def fault(ctx: Ctx) -> None:
        for k in range(kills):
            ctx.wait_offered((k + 1) / (kills + 2))
            time.sleep(rng.uniform(0.2, 1.0))
            p = rig.procs[-1]
            if p.poll() is None:
                p.kill()
                p.wait()
            rig.spawn(ctx)
        ctx.note(f"submitter SIGKILLed {kills}x mid-stream (lock TTL 3 s), restarted each time")
        ctx.healed_at = time.monotonic()  # run() waits for every tx to be CONFIRMED (settle_s)

    return start, fault


def skewed(offset_ms: int) -> list[str]:
    """Wall clock shifted by ``offset_ms`` (see ``chaos.skew`` for why libfaketime is not used as is)."""
    return skew.wrapper(offset_ms)


# --- the catalogue ----------------------------------------------------------------------------------


def catalogue(full: bool) -> list[tuple[str, dict[str, Any]]]:
    """(name, run() kwargs) for every scenario; ``full`` = bench sizes, else CI sizes."""
    txs, rate = (60, 6.0) if full else (24, 4.0)
    return [
        ("node crash (SIGKILL) + restart", {"fault": crash_restart(1, 4.0 if full else 3.0), "txs": txs, "rate": rate}),
        ("message loss 20% (every node)", {"drop_rate": 0.2, "txs": txs, "rate": rate}),
        ("clock skew +5s / -5s", {"wrappers": {1: skewed(5000), 2: skewed(-5000)}, "txs": txs, "rate": rate}),
        ("etcd member kill (not the nodes')", {"fault": etcd_kill((2,)), "txs": txs, "rate": rate}),
        ("etcd member kill (the nodes' own)", {"fault": etcd_kill((0,)), "txs": txs, "rate": rate}),
        ("etcd quorum loss (2 of 3)", {"fault": etcd_kill((1, 2), 8.0), "txs": txs, "rate": rate}),
        ("Postgres kill (immediate) + restart", {"fault": postgres_kill(5.0), "txs": txs, "rate": rate}),
        ("frozen process: SIGSTOP 1 of 5", {"fault": frozen((1,), 12.0), "txs": txs, "rate": rate}),
        ("frozen process: SIGSTOP 2 of 5 (no quorum)", {"fault": frozen((1, 2), 12.0), "txs": txs, "rate": rate}),
        ("byzantine double under load", {"byzantine": {4: "double"}, "txs": txs, "rate": rate}),
        ("byzantine minority under load", {"byzantine": {4: "minority"}, "txs": txs, "rate": rate}),
        ("byzantine forge under load", {"byzantine": {4: "forge"}, "txs": txs, "rate": rate}),
        ("byzantine silent under load", {"byzantine": {4: "silent"}, "deadline_ms": 4000, "txs": txs, "rate": rate}),
        # R9/R14 incidents: faults that outlast the deadline must not ban or blame the honest
        ("R14: Postgres down 10 s, deadline 5 s", {"fault": postgres_kill(10.0), "deadline_ms": 5000, "txs": txs,
                                                   "rate": rate}),
        ("R14: a trustee down 30 s, deadline 5 s", {"fault": crash_restart(1, 30.0), "deadline_ms": 5000,
                                                    "txs": txs, "rate": rate}),
        ("R14: one API opens txs nobody votes on", {"fault": lonely(0, 8), "deadline_ms": 3000, "txs": txs,
                                                    "rate": rate}),
    ]

