"""The write path: follow the log, decide, claim in the guard (etcd), append to the log (Postgres).

Every writer appends through here: trustee nodes, the submitter, the CLI's operator commands.

``Recorder.execute(commands)`` takes a batch of commands (received votes, deadline ticks,
operator commands) and returns one :class:`Result` each. It is the imperative shell around
``events.rules``: the rules decide, this module does the I/O in a fixed order.

1. catch up with the log (every node writes it, R13);
2. decide every command on a scratch copy of the state, so later commands in the batch see
   earlier ones; each decision becomes a unit with the stream versions it read;
3. one guard transaction claims the heads and the votes of the whole batch (``recording.guard``);
4. one Postgres transaction appends every unit (``events.postgres_store``);
5. units that conflicted are decided again on the fresh log; a vote that another live node
   has claimed is *deferred* and checked again later, so it is never lost.

A command the rules reject changes nothing and is reported as ``REJECTED`` with its error.
"""

from __future__ import annotations

import logging
import time
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import nacl.exceptions

from events import rules, snapshot
from events.commands import to_json as command_json
from events.errors import CommandRejected, StoreUnavailable
from events.follow import Follower, Void
from events.model import CLUSTER_STREAM, Event, tx_stream
from events.store import EventStore, Outcome, Snapshot, Unit, snapshot_bytes
from events.vote import SignedVote, verify_all
from events.writers import RowSigner
from observability.metrics import observe_results
from observability.tracing import VOTE_AGGREGATE, VOTE_STORE, span
from recording.guard import Claim, Guard, Refusal

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8
CLAIMS_PER_ETCD_TXN = 500  # ~5 ops each: needs etcd --max-txn-ops >= 4096 (devstack sets 8192)


class Status(Enum):
    APPENDED = "appended"  # its events are in the log
    DUPLICATE = "duplicate"  # nothing to record: already in the log (R3 or a retried append)
    REJECTED = "rejected"  # bad input or not allowed now; nothing changed
    DEFERRED = "deferred"  # another live node claimed the vote; retried by `retry_deferred`


@dataclass
class Result:
    status: Status
    events: list[Event] = field(default_factory=list)
    error: CommandRejected | None = None


class _Timed:
    """Adds the seconds a block takes to ``stats["us_<name>"]`` (microseconds): where an execute's time goes
    under load (exported with the node's counters; bench load points report them)."""

    __slots__ = ("key", "stats", "t0")

    def __init__(self, stats: dict[str, int], name: str) -> None:
        self.stats, self.key = stats, f"us_{name}"

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.stats[self.key] = self.stats.get(self.key, 0) + int((time.perf_counter() - self.t0) * 1e6)


class Recorder:
    def __init__(self, store: EventStore, guard: Guard, signer: RowSigner, retain_final: int | None = None,
                 evictable: frozenset[rules.TxStatus] = rules.FINAL) -> None:
        """``retain_final``: keep at most this many finished transactions in memory (the rest are read back
        from the log when named again); None keeps everything (tools, tests, short runs). ``evictable``: the
        statuses that count as finished here (``Follower``)."""
        self.store = store
        self.guard = guard
        self.signer = signer
        self.writer = signer.writer
        # The log as an honest follower reads it (R13): chain, writer signatures, entitlement, decisions.
        self.follower = Follower(me=signer.writer, retain_final=retain_final, evictable=evictable,
                                 loader=lambda tx_id: store.read_stream(tx_stream(tx_id)))
        self.deferred: list[rules.Command] = []
        self.stats = {"conflicts": 0, "etcd_refusals": 0, "heads_repaired": 0, "deferred": 0, "void_rows": 0,
                      "optimistic_rereads": 0, "claims_split": 0}
        # Called with every void row we read (forged, edited, or a decision the rules do not produce).
        self.on_void: Callable[[Void], None] | None = None
        # Called with every event the ledger takes in, ours or another node's, in log order: lets a
        # shell keep its own indexes (the node's deadline queue) without scanning the ledger.
        self.on_event: Callable[[Event], None] | None = None
        # writer -> when (our monotonic clock) we last read an event of theirs: who is alive and appending
        self.last_append: dict[str, float] = {}
        # Decide on the state we hold, without reading first (``execute``); off: read the log before every batch.
        self.optimistic = True
        # Only when we were the log's one writer lately: our last append landed right after what we had read
        # and no read since found rows of others. With other writers active, a decision made unread is refused
        # more often (N=10 under take-overs: 30-80 % more etcd refusals), and a refusal costs far more than a read.
        self._alone = False
        self.split_refusals = True  # a refused batch claims again at once what the refusal does not concern
        self._adopted = False  # the last attempt's rows were adopted as our state (no read-back needed)

    @property
    def ledger(self) -> rules.Ledger:
        return self.follower.ledger

    @property
    def versions(self) -> dict[str, int]:
        return self.follower.versions

    @property
    def position(self) -> int:
        """The last log position read (every row up to it is applied, void, or waiting for its signature)."""
        return self.follower.read

    # snapshots (bounded restart time) -------------------------------------------------------------

    SNAPSHOT_DOMAIN = b"threshold-vote/v1/snapshot"

    def extra_state(self) -> dict:
        """What a subclass keeps beside the follower's state (the submitter's index)."""
        return {}

    def restore_extra(self, extra: dict) -> None:
        return None

    def save_snapshot(self) -> int | None:
        """Save the follower's state at its settled position, signed with our key; returns the position."""
        f = self.follower
        if f.waiting or f.position == 0:
            return None
        row_hash = self.store.row_hash(f.position)
        if row_hash is None:
            return None
        state = snapshot.encode(f, self.extra_state())
        sig = self.signer.key.sign(self.SNAPSHOT_DOMAIN + snapshot_bytes(self.writer, f.position, row_hash,
                                                                          state)).signature
        self.store.save_snapshot(Snapshot(self.writer, f.position, row_hash, state, sig))
        return f.position

    def load_snapshot(self) -> int | None:
        """Start from our newest snapshot that is ours (our signature) and this log's (its hash); else from 0.

        A snapshot that fails either check is refused, logged, and the next older one tried; then the
        log is folded from position 0, as if there were none.
        """
        for snap in self.store.snapshots(self.writer):
            try:
                self.signer.key.verify_key.verify(
                    self.SNAPSHOT_DOMAIN + snapshot_bytes(snap.owner, snap.position, snap.hash, snap.state),
                    snap.signature or b"")
            except (nacl.exceptions.BadSignatureError, ValueError):
                log.error("snapshot of %s at %d refused: not signed by us", self.writer, snap.position)
                continue
            if self.store.row_hash(snap.position) != snap.hash:
                log.error("snapshot of %s at %d refused: the log's hash there differs (another log, or an edit)",
                          self.writer, snap.position)
                continue
            try:
                fresh = Follower(me=self.writer, retain_final=self.follower.retain_final, loader=self.follower.loader,
                                 evictable=self.follower.evictable)
                extra = snapshot.decode(snap.state, fresh)
            except snapshot.SnapshotMismatch as e:
                log.error("snapshot of %s at %d refused: %s", self.writer, snap.position, e)
                continue
            if fresh.prev_hash != snap.hash:
                log.error("snapshot of %s at %d refused: its state ends at another hash", self.writer, snap.position)
                continue
            self.follower = fresh
            self.restore_extra(extra)
            return snap.position
        return None

    # following the log ------------------------------------------------------------------------

    def catch_up(self, batch: int = 5000) -> int:
        """Apply every event appended since we last looked (by any node); returns how many rows we read."""
        with _Timed(self.stats, "follow"):
            return self._catch_up(batch)

    def _catch_up(self, batch: int) -> int:
        n = 0
        while True:
            rows = self.store.read_all(after=self.follower.read, limit=batch)
            if self._alone and any(r.writer != self.writer for r in rows):
                self._alone = False
            seen = time.monotonic()
            for r in rows:
                self.last_append[r.writer] = seen
            for settled in self.follower.feed(rows):
                if settled.event is not None:
                    if self.on_event is not None:
                        self.on_event(settled.event)
                elif settled.void is not None:
                    self.stats["void_rows"] += 1
                    if self.on_void is not None:
                        self.on_void(settled.void)
            n += len(rows)
            if len(rows) < batch:
                return n

    # the write path ---------------------------------------------------------------------------

    def execute(self, commands: list[rules.Command]) -> list[Result]:
        """Decide, claim and append ``commands``; one result each, in order.

        Optimistic (``optimistic``, while we are the log's one writer: our last append landed right after
        what we had read, and nothing read since was written by another): the first attempt decides on the
        state we hold, without reading the log first. An append decided on a stale state cannot land:
        each unit names the versions of the streams its decision read, and the etcd CAS and then
        Postgres refuse it if any moved (the same check that covers the window between a read and an
        append, which always exists). What a stale state could get wrong is a decision that writes
        nothing (a rejection, a duplicate): those are decided again after a read. When the append
        lands right after what we had read, the trailing read is skipped too (we adopted our own rows,
        ``_claim_and_append``): a single-vote execute is then the etcd transaction and the Postgres
        append, no read (docs/decisions.md, "The write path at batch 1").
        """
        self._verify_ahead(commands)
        results: list[Result | None] = [None] * len(commands)
        todo = list(range(len(commands)))
        read = not (self.optimistic and self._alone)
        for attempt in range(MAX_ATTEMPTS):
            if not todo:
                break
            if attempt > 0 or read:
                self.catch_up()
                read = True
            first = todo
            self._adopted = False
            todo = self._attempt(commands, todo, results)
            if attempt == 0 and not read:
                # decided on what we held, unread: what wrote nothing is decided again on the log
                again = [i for i in first if (r := results[i]) is not None
                         and r.status in (Status.REJECTED, Status.DUPLICATE)]
                if again:
                    self.stats["optimistic_rereads"] += 1
                    for i in again:
                        results[i] = None
                    todo = sorted({*todo, *again})
        if todo or not self._adopted:
            self.catch_up()  # the ledger reflects what we (and others) just appended
        for i in todo:  # still conflicting after every attempt: keep it, never drop it
            self.deferred.append(commands[i])
            results[i] = Result(Status.DEFERRED)
            self.stats["deferred"] += 1
        out = [r for r in results if r is not None]
        observe_results(self.writer, commands, out)
        return out

    def _verify_ahead(self, commands: list[rules.Command]) -> None:
        """Check the batch's signatures in parallel first; the rules then find them in the memo.

        On a node the gossip edge has checked them already (all hits, nothing to do); votes that
        reach the recorder another way (benchmarks, tools) would otherwise be checked one by one.
        """
        members = self.ledger.cluster.members
        pairs = []
        for c in commands:
            if isinstance(c, rules.ReceiveVote) and isinstance(c.vote, SignedVote):
                m = members.get(c.vote.vote.node_id)
                if m is not None:
                    pairs.append((c.vote, m.vote_key))
        verify_all(pairs)

    def retry_deferred(self) -> list[Result]:
        pending, self.deferred = self.deferred, []
        return self.execute(pending) if pending else []

    def _attempt(self, commands: list[rules.Command], todo: list[int], results: list[Result | None]) -> list[int]:
        with _Timed(self.stats, "ensure"):
            self.follower.ensure({t for i in todo if isinstance(t := getattr(commands[i], "tx_id", None), str)})
        # Copy-on-write views of the ledger and the stream versions: a batch touches a few
        # transactions, the ledger may hold millions; copying it per attempt would grow without bound.
        scratch = rules.Ledger()
        scratch.cluster, scratch.txs = self.ledger.cluster, ChainMap({}, self.ledger.txs)  # type: ignore[assignment]
        versions: ChainMap[str, int] = ChainMap({}, self.versions)
        with span(VOTE_AGGREGATE, commands=len(todo)), _Timed(self.stats, "decide"):
            batch = self._decide(commands, todo, results, scratch, versions)
        if not batch:
            return []
        return self._claim_and_append(commands, batch, results, scratch, versions)

    def _decide(self, commands: list[rules.Command], todo: list[int], results: list[Result | None],
                scratch: rules.Ledger, versions: ChainMap[str, int]) -> list[tuple[int, Unit, Claim, list[Event]]]:
        """Decide each command on the scratch state; a decision becomes a unit and an etcd claim."""
        batch: list[tuple[int, Unit, Claim, list[Event]]] = []
        for i in todo:
            cmd = commands[i]
            try:
                rules.authorize(scratch.cluster, self.writer, cmd)  # followers would void it otherwise (R13)
                decision = scratch.step(cmd)
            except CommandRejected as e:
                results[i] = Result(Status.REJECTED, error=e)
                continue
            events = decision.events
            if not events:
                results[i] = Result(Status.DUPLICATE)
                continue
            tx_id = getattr(cmd, "tx_id", None)
            read = [CLUSTER_STREAM] + ([tx_stream(tx_id)] if tx_id else [])
            expected = {s: versions.get(s, 0) for s in read}
            written: dict[str, int] = {}
            for e in events:
                versions[e.stream] = versions.get(e.stream, 0) + 1
                written[e.stream] = written.get(e.stream, 0) + 1
            unit = Unit.of(expected, events, command_json(cmd))
            batch.append((i, unit, Claim.of(expected, written, decision.effects), events))
        return batch

    def _claim_and_append(self, commands: list[rules.Command], batch: list[tuple[int, Unit, Claim, list[Event]]],
                          results: list[Result | None], scratch: rules.Ledger,
                          versions: ChainMap[str, int]) -> list[int]:
        """etcd claims (per chunk), then one Postgres append; returns the commands to decide again."""
        granted: list[tuple[int, Unit, Claim, list[Event]]] = []
        retry: list[int] = []
        for start in range(0, len(batch), CLAIMS_PER_ETCD_TXN):
            chunk = batch[start:start + CLAIMS_PER_ETCD_TXN]
            with span(VOTE_STORE, claims=len(chunk)), _Timed(self.stats, "claim"):
                refusal = self.guard.claim([c for _, _, c, _ in chunk])
            if refusal is None:
                granted.extend(chunk)
                continue
            self.stats["etcd_refusals"] += 1
            with _Timed(self.stats, "resolve"):
                deferred = self._resolve(refusal, chunk)
            for i in deferred:
                self.deferred.append(commands[i])
                results[i] = Result(Status.DEFERRED)
                self.stats["deferred"] += 1
            # the last chunk (no later one was decided on top of it)
            if self.split_refusals and start + len(chunk) == len(batch):
                clear = [x for x in self._untouched(refusal, chunk) if x[0] not in deferred]
                if clear:
                    with span(VOTE_STORE, claims=len(clear)), _Timed(self.stats, "claim"):
                        again = self.guard.claim([c for _, _, c, _ in clear])
                    if again is None:
                        self.stats["claims_split"] += 1
                        granted.extend(clear)
                        kept = {i for i, *_ in clear}
                        retry.extend(i for i, *_ in chunk if i not in deferred and i not in kept)
                        break
                    self.stats["etcd_refusals"] += 1
            # this chunk and every later one were decided on top of it: decide them again
            retry.extend(i for i, *_ in batch[start:] if i not in deferred)
            break

        if granted:
            with _Timed(self.stats, "append"):
                outcomes = self.store.append([u for _, u, _, _ in granted], self.signer)
            if not retry and self._contiguous(outcomes) and len(granted) == len(batch) and not self.follower.waiting:
                # Nobody else wrote between our last read and this append, and every unit
                # landed as decided: the scratch state *is* the log's state. Adopt it rather
                # than reading back and re-folding what we just wrote.
                self.ledger.cluster = scratch.cluster
                self.ledger.txs.update(scratch.txs.maps[0])  # type: ignore[attr-defined]
                self.follower.adopt_own(outcomes[-1].positions[-1], outcomes[-1].last_hash, versions.maps[0])
                self.follower.track(scratch.txs.maps[0])  # type: ignore[attr-defined]
                self.last_append[self.writer] = time.monotonic()
                self._adopted = True
                self._alone = True
                if self.on_event is not None:
                    for _, _, _, events in granted:
                        for e in events:
                            self.on_event(e)
            conflicted = []
            for (i, _, claim, events), res in zip(granted, outcomes, strict=True):
                if res.outcome is Outcome.APPENDED:
                    results[i] = Result(Status.APPENDED, events)
                elif res.outcome is Outcome.DUPLICATE:
                    results[i] = Result(Status.DUPLICATE)
                else:
                    self.stats["conflicts"] += 1
                    conflicted.append(claim)
                    retry.append(i)
            if conflicted:
                with _Timed(self.stats, "undo"):
                    self._undo_claims(conflicted)
        return retry

    @staticmethod
    def _untouched(refusal: Refusal, chunk: list) -> list:
        """The units of a refused chunk that the refusal does not concern, in order: they may be claimed again
        at once, as decided, instead of being decided again with the rest.

        A guard transaction is all or nothing, so one transaction taken over by another node (its head
        moved, a vote claimed) refused a whole batch, and every unit in it went round again, up to
        ``MAX_ATTEMPTS`` times, then was deferred (issue 15: under load at N=10 most refusals were of this
        kind). A unit is concerned when a stream it read has another head than the batch started from, or
        a vote it claims is taken, or it read a stream that a concerned unit before it writes (it was decided
        on top of that unit). The others read only streams nobody moved: their decisions stand.
        """
        start: dict[str, int] = {}
        for _, _, c, _ in chunk:
            for stream, v in c.expected.items():
                start.setdefault(stream, v)
        moved = {stream for stream, v in start.items() if (refusal.heads.get(stream) or 0) != v}
        clear = []
        for item in chunk:
            claim = item[2]
            if moved.intersection(claim.expected) or any(k in refusal.votes for k in claim.votes):
                moved.update(claim.written)
                continue
            clear.append(item)
        return clear

    def _contiguous(self, outcomes: list) -> bool:
        positions = [p for o in outcomes for p in o.positions]
        return (all(o.outcome is Outcome.APPENDED for o in outcomes) and bool(positions)
                and positions == list(range(self.position + 1, self.position + 1 + len(positions))))

    def _resolve(self, refusal: Refusal, chunk: list) -> set[int]:
        """Make the next attempt able to pass: repair heads from PG, sort out vote claims."""
        truth = self.store.stream_versions(list(refusal.heads))
        for stream, head in refusal.heads.items():
            pg = truth[stream]
            if head == pg:
                continue  # our state was stale; catching up fixes it
            behind = head is None or head < pg
            if behind or not refusal.writers_alive[stream] or self._our_head(stream, refusal):
                # etcd lost/behind, or ahead because its writer died (or failed) before PG: PG wins.
                if self.guard.repair_head(stream, head, pg):
                    self.stats["heads_repaired"] += 1
            else:
                # A live writer is between its etcd CAS and its PG commit. Once per such stream: sleeping once
                # per refusal instead retried sooner while the other writer still held the stream, and at
                # N=10 under take-overs gave 1.4-2x the refusals and ~15 % less throughput (four pairs).
                time.sleep(0.01)
        for suffix, (_, mod_rev, ours) in refusal.votes.items():
            if ours:
                self.guard.release_vote(suffix, mod_rev)  # our own claim from an append that failed
        # A vote another live node has claimed: it is recording it; check the log again later.
        return {i for i, _, claim, _ in chunk
                if any(k in refusal.votes and not refusal.votes[k][2] for k in claim.votes)}

    def _our_head(self, stream: str, refusal: Refusal) -> bool:
        """Did we move this head? The refusal says, read in its transaction; else ask the guard."""
        writer = refusal.head_writers[stream] if stream in refusal.head_writers else self.guard.head_writer(stream)
        return writer == self.guard.node_id

    def _undo_claims(self, claims: list[Claim]) -> None:
        """Our etcd CAS passed but PG refused: put the heads back to PG's truth at once."""
        streams = sorted({s for c in claims for s in c.expected})
        truth = self.store.stream_versions(streams)
        for s in streams:
            head = self.guard.head(s)
            if head != truth[s] and self.guard.repair_head(s, head, truth[s]):
                self.stats["heads_repaired"] += 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


__all__ = ["Recorder", "Result", "Status", "StoreUnavailable", "now_ms"]
