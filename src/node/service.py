"""A trustee node: libp2p gossip in, the decider, the cluster log out, bans at the edge.

Threads and why (the Trio boundary is described in ``node/p2p/README.md``):

- the gossip host runs Trio on its own thread; our ``_validate`` runs there, before a
  message is forwarded: it parses the batch, drops outsiders (R1, counted, never logged),
  and verifies every signature (memoised, so the decider's check is a cache hit);
- accepted deliveries go from the Trio thread straight into the inbox (``_deliver``, non-blocking,
  with the votes the edge already parsed: no thread hop, no second parse);
- ``worker`` is the only writer: it drains the inbox in short windows, runs the batch
  through the ``Recorder`` (decide -> etcd CAS -> Postgres), ticks deadlines, retries
  deferred votes, follows the log written by the other nodes, and enforces bans on the
  gossip host (R10);
- ``publisher`` sends this node's own votes in batches on a short window;
- the local API serves operators and clients on 127.0.0.1 (``node.api``).
"""

from __future__ import annotations

import collections
import heapq
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.signing
from libp2p.peer.id import ID

from events import rules
from events.envelope import Envelope
from events.errors import CommandRejected, InvalidVote, StoreUnavailable, ThresholdVoteError
from events.follow import AWAITING_CHAIN, DEFAULT_RETAIN_FINAL, Void
from events.model import Event, TransactionOpened, VoteAccepted, tx_stream
from events.postgres_store import COMMIT_BOUND_S, PostgresStore
from events.vote import SignedVote
from events.writers import RowSigner
from node import duty, wire
from node.p2p import GossipConfig, ThreadedGossipHost
from node.p2p.identity import load_seed
from node.signer import (
    ClaimLost,
    Holder,
    InstanceClaim,
    InstanceClaimed,
    JournalError,
    Refused,
    Signed,
    Signer,
    SignerClosed,
    SignerError,
    request_refused,
)
from node.signer.claim import CLAIM_TTL
from observability.metrics import METRICS
from observability.tracing import VOTE_RECEIVE, VOTE_VALIDATE, span
from recording.etcd_guard import EtcdGuard
from recording.recorder import Recorder, Status, now_ms

log = logging.getLogger(__name__)


class NodeStartError(ThresholdVoteError):
    """The node cannot start as configured; the message says what to fix."""


class NotEligible(CommandRejected):
    """This trustee is banned (R10) or removed (R1): its votes would never be recorded."""


class VoteConflict(CommandRejected):
    """R14: this trustee already signed another value for one of the transactions; nothing was signed."""

    def __init__(self, message: str, earlier: list[SignedVote]) -> None:
        super().__init__(message)
        self.earlier = earlier


class SignerUnavailable(ThresholdVoteError):
    """The signer cannot sign now (its instance claim lapsed, or its journal failed); nothing was signed."""


# Rankings kept for ``TrusteeNode._duty``: a ranking is N hashes (7 us at N=10) and is needed while a transaction is in
# flight; 100,000 (the earlier bound) held ~24 MB at N=10 before the cache was cleared, a sixth of a node's RSS.
RANKINGS_KEPT = 10_000


@dataclass
class NodeConfig:
    node_id: str
    key_file: str
    dsn: str
    etcd: str
    etcd_prefix: str = "/tvote"
    listen_port: int = 0
    bootstrap: list[str] = field(default_factory=list)
    api_port: int = 0
    api_token: str = ""
    listen_host: str = "127.0.0.1"  # with listen_port: libp2p's one listen address when ``listen`` is empty
    listen: list[str] = field(default_factory=list)  # multiaddrs libp2p listens on (node.p2p.addrs)
    advertise: list[str] = field(default_factory=list)  # multiaddrs peers dial; empty: the listen addresses
    api_host: str = "127.0.0.1"  # off loopback the API needs TLS (or api_plain_http, said explicitly)
    api_tls_cert: str = ""
    api_tls_key: str = ""
    api_plain_http: bool = False
    # NAT traversal (node.p2p.nat): relay circuits for the members; relays to reserve a slot on while
    # not publicly reachable; "auto" (AutoNAT), "public" or "private".
    relay_service: bool = False
    relays: list[str] = field(default_factory=list)
    reachability: str = "auto"
    # At start, how long to wait for a bootstrap peer (or any member) before giving up with a one-line error;
    # a bootstrap peer that answers with another peer id is an error as soon as it is seen (issue 18).
    bootstrap_timeout_s: float = 30.0
    journal: str = ""  # R14: the signing journal (default: beside the key file, ``<key_file>.journal``)
    batch_window_ms: float = 5.0  # the worker gathers received votes this long into one recording batch
    publish_interval_ms: float = wire.PUBLISH_INTERVAL_MS  # the publisher's pace under load, at least
    publish_interval_per_member_ms: float = wire.PUBLISH_INTERVAL_PER_MEMBER_MS  # ... times the eligible members
    max_batch: int = 500
    tick_ms: float = 100.0
    # Edge replay protection beside the seen-cache: a vote signed further in the past or the
    # future than this is dropped before it costs a signature check. Wide enough for the
    # +-5 s clock skew the chaos suite injects; R3 makes any replay inside it harmless anyway.
    max_vote_age_ms: int = 300_000
    max_vote_future_ms: int = 30_000
    # Per-author gossip rate limit (messages/s, burst), applied before our validator, so a
    # flood of invalid votes from one peer cannot starve honest ones of CPU.
    author_rate_limit: tuple[float, float] | None = (200.0, 400.0)
    # R13, scheduled (node.duty): the member ranked r for a transaction records its votes and
    # ticks its deadline only if they are still not in the log r * grace after they arrived.
    record_grace_ms: int = duty.DEFAULT_GRACE_MS
    # ... and waits longer for a member ranked before it that is alive (still appending), up to this.
    record_patience_ms: int = duty.DEFAULT_PATIENCE_MS
    # The member ranked first holds a transaction's votes up to this long to append them together: never
    # the vote that completes the threshold, nor past every eligible member's vote (node.duty.release_held).
    # 0: each vote is appended in the batch it arrived in. Kept well under the grace (checked at start).
    record_hold_ms: int = duty.DEFAULT_HOLD_MS
    # Committee delivery sends each of our votes to the members ranked first for its transaction, this
    # many besides us (the recorder and who takes over from it); 0: to every member (node.duty.recipients).
    vote_fanout: int = duty.DEFAULT_FANOUT
    # How often the worker reads what the other nodes appended (it also reads after each append).
    follow_ms: float = 20.0
    # ... backing off (doubling) to this while the log and the inbox stay quiet: an idle node's
    # 50 reads/s were most of its CPU (issue 15); the first vote or row back resets it to follow_ms.
    follow_idle_ms: float = 200.0
    # R9: deadlines are ticked only once the log has been writable (and followed) for this long without
    # a break, so votes signed before a deadline during a store outage reach the log first.
    outage_grace_ms: int = 5000
    # A Postgres write (its wait for a synchronous standby included) is given up after this, in doubt, and
    # retried as in any store outage (events.postgres_store): no worker hangs on a cluster with no standby.
    pg_commit_bound_s: float = COMMIT_BOUND_S
    # On start, votes our journal holds from this far back that the log lacks are sent again (R9, R14).
    resend_window_ms: int = 24 * 3600 * 1000
    # Back-pressure: the API refuses new casts at once (503 + Retry-After, nothing signed) while more than
    # this many votes wait for the worker, or while the worker has not completed a loop for this long.
    max_backlog: int = 20_000
    max_worker_lag_ms: int = 3000
    # Bounded memory: finished transactions kept in memory (older ones are read back from the log when named).
    retain_final: int = DEFAULT_RETAIN_FINAL
    # Bounded restart time: save the follower's state every this many log rows (a restart folds only what follows).
    snapshot_every: int = 50_000


@dataclass
class Counters:
    """What the node dropped or did, by reason; exported as metrics."""

    values: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.values[name] = self.values.get(name, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.values)


class TrusteeNode:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.seed = load_seed(cfg.key_file)  # refuses key files readable by others
        self.signing_key = nacl.signing.SigningKey(self.seed)
        self.counters = Counters()
        # (author peer, vote, the author's envelope when the vote is evidence against it)
        self.inbox: queue.Queue[tuple[str, SignedVote, Envelope | None]] = queue.Queue(maxsize=200_000)
        self.outbox: queue.Queue[SignedVote] = queue.Queue(maxsize=100_000)
        self.recorder: Recorder | None = None
        self.gossip: ThreadedGossipHost | None = None
        self._banned: set[str] = set()
        self._allowed: set[str] = set()
        self._enforced_for: rules.Cluster | None = None
        self._stop_intake = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._caught_up = False
        # API threads waiting for our votes to reach the log, by transaction: woken one by one when the
        # log accepts our vote there, not all at every move of the log (node.api: 202 means durable)
        self._waiters: dict[str, set[threading.Event]] = {}
        self._waiters_lock = threading.Lock()
        self.reception: collections.deque[int] = collections.deque(maxlen=20_000)  # ms, signed -> our edge
        self._reception_seconds = METRICS.vote_reception.labels(cfg.node_id)  # one child, not a lookup per vote
        self._parsed: dict[bytes, list[SignedVote]] = {}  # payload -> its votes, from the edge to the pump
        # votes left to the members ranked before us: (tx, node, value) -> (command, arrived, due, ours)
        self.standby: dict[tuple[str, str, int], tuple[rules.ReceiveVote, float, float, bool]] = {}
        # votes we record first, held to append a transaction's votes together (node.duty.release_held):
        # tx_id -> (when the first arrived, (node, value) -> command)
        self._held: dict[str, tuple[float, dict[tuple[str, int], rules.ReceiveVote]]] = {}
        self._held_touched: set[str] = set()  # ... those that gained a vote since the worker's last pass
        self._delays: dict[str, tuple[int, list[str]]] = {}  # tx_id -> (our delay ms, members ahead of us)
        self._delays_for: tuple[rules.Cluster | None, list[str]] = (None, [])
        # (deadline + our delay, tx_id) of transactions whose deadline has not fired, fed from the log
        self._deadlines: list[tuple[int, str]] = []
        self.signer: Signer | None = None
        self._store_ok_since: float | None = None  # monotonic time the log became writable again (R9)
        self._reported: set[int] = set()  # positions of invalid entries we already reported (R13)
        self._beat = time.monotonic()  # the worker's last completed loop (back-pressure, health)
        self._loop_s = 0.0  # how long a pass of the worker loop works, smoothed (node.duty.under_load)
        self._idle_s = 0.0  # ... of the last pass, the time it slept waiting for a vote (not work)
        self._snapshot_at = 0  # the log position of our last snapshot
        self._followed_at = 0.0  # when the worker last read the log through (readiness)

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> TrusteeNode:
        """Start, or fail with a clear error leaving nothing behind (no claim, no thread, no listener)."""
        if self.cfg.record_grace_ms and 2 * self.cfg.record_hold_ms > self.cfg.record_grace_ms:
            raise NodeStartError(f"record_hold_ms {self.cfg.record_hold_ms} must be at most half of record_grace_ms "
                                 f"{self.cfg.record_grace_ms}: the next member would take the held votes over")
        self._open_signer()
        try:
            return self._start()
        except BaseException:
            self.stop(timeout=5.0)
            raise

    def _start(self) -> TrusteeNode:
        store = PostgresStore(self.cfg.dsn, commit_bound_s=self.cfg.pg_commit_bound_s)
        guard = EtcdGuard(self.cfg.etcd, self.cfg.etcd_prefix, self.cfg.node_id)
        # A trustee signs the log with its vote key, as the member the log admitted (R13).
        self.recorder = Recorder(store, guard, RowSigner(self.cfg.node_id, self.signing_key),
                                 retain_final=self.cfg.retain_final, evictable=rules.FINAL | AWAITING_CHAIN)
        self.recorder.on_event = self._on_event
        self.recorder.on_void = self._on_void
        loaded = self.recorder.load_snapshot()
        if loaded:
            log.info("%s starts from its snapshot at position %d", self.cfg.node_id, loaded)
            for tx in self.recorder.ledger.txs.values():  # deadlines still to tick, opened before the snapshot
                if not tx.deadline_fired:
                    heapq.heappush(self._deadlines, (tx.deadline_at_ms + self._delay_ms(tx.tx_id), tx.tx_id))
        self.recorder.on_void = self._on_void
        self.recorder.catch_up()
        self._snapshot_at = self.recorder.position
        me = self.recorder.ledger.cluster.members.get(self.cfg.node_id)
        if me is None or not me.active:
            raise NodeStartError(f"{self.cfg.node_id} is not an admitted member: run `tvote members add` first (R1)")
        if me.vote_key != bytes(self.signing_key.verify_key):
            raise NodeStartError(f"the key file's public key is not the vote key admitted for {self.cfg.node_id}")
        members = self.recorder.ledger.cluster.members.values()
        self._banned = {m.peer_id for m in members if m.banned and _parses(m.peer_id)}
        self._allowed = {m.peer_id for m in members if m.active and _parses(m.peer_id)}
        self.gossip = ThreadedGossipHost(
            GossipConfig(seed=self.seed, listen_host=self.cfg.listen_host, listen_port=self.cfg.listen_port,
                         listen=list(self.cfg.listen), advertise=list(self.cfg.advertise),
                         bootstrap=list(self.cfg.bootstrap),
                         banned=sorted(self._banned), author_rate_limit=self.cfg.author_rate_limit,
                         allowed_peers=sorted(self._allowed), relay_service=self.cfg.relay_service,
                         relays=list(self.cfg.relays), reachability=self.cfg.reachability),
            validate=self._validate,
            on_deliver=lambda author, payload: self._deliver(author, payload),  # looked up per call (chaos wraps it)
        ).start()
        if self.gossip.peer_id != me.peer_id:
            self.gossip.close()
            raise NodeStartError(f"libp2p peer id {self.gossip.peer_id} is not the one admitted ({me.peer_id})")
        if me.eligible:
            self._check_bootstrap()
        for target in (self._work, self._publish):
            t = threading.Thread(target=target, name=target.__name__, daemon=True)
            t.start()
            self._threads.append(t)
        self._store_ok_since = time.monotonic()
        self._resend_unlogged()
        return self

    def _check_bootstrap(self) -> None:
        """Bad bootstrap configuration is a start error, not a node silently alone (issue 18).

        A bootstrap peer whose address answers the handshake as another peer (a wrong peer id, an address
        reused by another node) is refused as soon as it is seen. A node that reaches none of its bootstrap
        peers and no member at all within ``bootstrap_timeout_s`` stops with the reason of each failed
        dial. A node already connected to a member (one dialled us) is not alone: the others are only
        warned about; the discovery loop keeps dialling them.
        """
        boots = {b.rsplit("/p2p/", 1)[1]: b for b in self.cfg.bootstrap}
        boots = {p: a for p, a in boots.items() if p in self._allowed and p != self.gossip.peer_id}
        if not boots:
            return
        deadline = time.monotonic() + self.cfg.bootstrap_timeout_s
        while True:
            connected = self.gossip.connected_peer_ids
            errors = self.gossip.gossip.dial_errors
            for peer, addr in boots.items():
                if peer not in connected and "handshake failed" in errors.get(peer, ""):
                    raise NodeStartError(f"--bootstrap {addr}: that address answers, but not as peer {peer} "
                                         "(a wrong peer id, or another node there)")
            settled = all(p in connected or p in errors for p in boots)  # every first dial done, either way
            if settled or time.monotonic() >= deadline:
                if connected & set(boots) or self.gossip.gossip.connected_member_count:
                    missing = [a for p, a in boots.items() if p not in connected]
                    if missing:
                        log.warning("%s: bootstrap peers not reached yet (still dialled): %s", self.cfg.node_id,
                                    ", ".join(missing))
                    return
                if time.monotonic() >= deadline:
                    why = "; ".join(f"{a}: {errors.get(p, 'no answer')}" for p, a in boots.items())
                    raise NodeStartError(
                        f"no bootstrap peer reachable in {self.cfg.bootstrap_timeout_s:g} s ({why})"[:600])
            time.sleep(0.1)

    def _resend_unlogged(self) -> None:
        """Votes we signed lately that the log lacks (a crash or an outage before they got there): send them now.

        R9/R14: a vote signed before its deadline that reaches the log late withdraws the silence charged
        for it; a vote that stayed only in our journal would leave that silence standing. A transaction
        that may have left memory (finished long ago) is skipped.
        """
        since = now_ms() - self.cfg.resend_window_ms
        txs = self.recorder.ledger.txs
        evicted = self.recorder.follower.evicted
        owed = []
        for sv in self.signer.votes_since(since):
            tx = txs.get(sv.vote.tx_id)
            held = tx.votes.get(self.cfg.node_id) if tx else None
            if held is None and (tx is not None or sv.vote.tx_id not in evicted):
                owed.append(sv)
        if owed:
            log.info("%s sends %d votes from its journal the log does not hold yet", self.cfg.node_id, len(owed))
            self.counters.add("resent_from_journal", len(owed))
            self.send(owed)

    def _open_signer(self) -> None:
        """R14: one process per trustee key, and a journal consulted before any signature leaves us.

        The local lock (taken by ``Signer.open``) names a second process on this machine; the etcd
        instance claim names one on another machine. A claim left by a process of ours that was
        killed on this host expires with its lease: we wait for that, rather than refuse.
        """
        journal = self.cfg.journal or f"{self.cfg.key_file}.journal"
        try:
            self.signer = Signer.open(journal, self.signing_key, self.cfg.node_id)
        except SignerError as e:
            raise NodeStartError(f"signer: {e}") from None
        try:
            self.signer.replace_claim(self._claim_instance(wait=CLAIM_TTL + 3))
        except BaseException:
            self.signer.close()
            raise

    def _claim_instance(self, wait: float) -> InstanceClaim:
        end = time.monotonic() + wait
        while True:
            try:
                return InstanceClaim.acquire(self.cfg.etcd, self.cfg.etcd_prefix, self.cfg.node_id)
            except InstanceClaimed as e:
                holder = Holder.parse(e.holder)
                ours_and_dead = (holder is not None and holder.hostname == socket.gethostname()
                                 and not _pid_alive(holder.pid))
                if not ours_and_dead or time.monotonic() >= end:
                    who = holder.describe() if holder else e.holder
                    raise NodeStartError(f"another process signs as {self.cfg.node_id}: {who}; stop it first "
                                         "(one process per trustee key, R14)") from None
                time.sleep(0.5)
            except StoreUnavailable as e:
                raise NodeStartError(f"cannot take the instance claim in etcd: {e}") from None

    def stop(self, timeout: float = 25.0) -> None:
        """SIGTERM: stop intake, finish in-flight votes, leave the mesh, close connections."""
        self._stop_intake.set()
        deadline = time.monotonic() + timeout
        while not self.outbox.empty() and time.monotonic() < deadline:
            time.sleep(0.01)  # our own votes still go out
        if self.gossip is not None:
            self.gossip.close(timeout=max(1.0, deadline - time.monotonic()))
        self._stopped.set()
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        if self.recorder is not None:
            self.recorder.guard.close()
            self.recorder.store.close()
        if self.signer is not None:
            claim = self.signer.claim
            self.signer.close()
            if claim is not None:
                claim.close()

    @property
    def healthy(self) -> bool:
        signer_ok = self.signer is not None and self.signer.stopped is None
        gossip_ok = self.gossip is not None and self.gossip.alive
        return (bool(self._threads) and all(t.is_alive() for t in self._threads) and not self._stopped.is_set()
                and signer_ok and gossip_ok)

    def why_unhealthy(self) -> str:
        """What is wrong, for the log line a supervisor reads before restarting us."""
        why = [f"thread {t.name} died" for t in self._threads if not t.is_alive()]
        if self.gossip is not None and not self.gossip.alive:
            why.append(f"gossip thread ended: {self.gossip.error!r}"[:300])
        if self.signer is not None and self.signer.stopped:
            why.append(f"signer stopped: {self.signer.stopped}"[:300])
        return "; ".join(why) or "stopping"

    @property
    def ready(self) -> bool:
        """Serving for real: threads alive, following the log, and connected to enough members to reach t."""
        following = time.monotonic() - self._followed_at < 5.0  # the log is being read, not only was once
        return (self.healthy and self._caught_up and following
                and self.gossip.connected_member_count >= self.peers_needed())

    @property
    def eligible(self) -> bool:
        """A member the log has neither banned nor removed: one that can ever be ready (peers refuse the others)."""
        me = self.recorder.ledger.cluster.members.get(self.cfg.node_id)
        return me is not None and me.eligible

    def peers_needed(self) -> int:
        """Connected members needed for our votes to reach t: t - 1 of the eligible others."""
        cluster = self.recorder.ledger.cluster
        t = cluster.config.threshold if cluster.config else 1
        return max(0, min(t, cluster.eligible_count()) - 1)

    # votes of our own ------------------------------------------------------------------------

    def cast(self, tx_id: str, value: int) -> list[SignedVote]:
        """Sign and send this node's vote."""
        return self.cast_many([(tx_id, value)])

    def cast_many(self, ballots: list[tuple[str, int]]) -> list[SignedVote]:
        """Sign and send this node's votes for many transactions at once.

        A client voting on many transactions hands them over together, so they leave in one
        gossip batch and reach the log in one append instead of one round trip each.
        """
        self.check_eligible()
        try:
            outcomes = self.signer.sign_many(ballots, now_ms())
        except (ClaimLost, JournalError, SignerClosed) as e:
            METRICS.signer_refusals.labels(self.cfg.node_id, type(e).__name__).inc()
            raise SignerUnavailable(f"nothing signed: {e}") from None
        if request_refused(outcomes):
            earlier = [o.earlier for o in outcomes if isinstance(o, Refused)]
            METRICS.signer_refusals.labels(self.cfg.node_id, "conflict").inc(len(earlier))
            raise VoteConflict("already signed another value for " + ", ".join(sv.vote.tx_id for sv in earlier)
                               + " (R14): nothing signed", earlier)
        mine = [o.vote for o in outcomes if isinstance(o, Signed)]
        self.send(mine)  # an earlier vote again too: it may never have left before a crash
        return mine

    def overload(self) -> float | None:
        """Seconds a client should wait before trying again, when the worker is too far behind (else None).

        Checked before anything is signed: refusing early keeps the backlog bounded and the client free
        to try another trustee, instead of queueing work that would answer 503 only after 10 s.
        """
        backlog = self.inbox.qsize()
        lag = time.monotonic() - self._beat
        if backlog > self.cfg.max_backlog:
            return max(1.0, backlog / 5000)
        if lag > self.cfg.max_worker_lag_ms / 1000:
            return max(1.0, min(30.0, lag))
        return None

    def check_eligible(self) -> None:
        """Refuse to sign when our votes could never be recorded (stopping, removed, banned)."""
        if self._stop_intake.is_set():
            raise NodeStartError("the node is stopping: no new votes")
        me = self.recorder.ledger.cluster.members.get(self.cfg.node_id)
        if me is None or not me.active:
            raise NotEligible(f"{self.cfg.node_id} is no longer a member (R1): an operator must admit it again")
        if me.banned:
            raise NotEligible(f"{self.cfg.node_id} is banned (R10): its votes are dropped by every node until "
                              "an operator lifts the ban (`tvote unban`)")

    def send(self, votes: list[SignedVote], record: bool = True) -> None:
        """Hand signed votes to the publisher and (``record``) to our own recorder.

        Our own publishes are not delivered back to us, so we record our votes ourselves.
        """
        for sv in votes:
            if record:
                self.inbox.put((self.gossip.peer_id, sv, None))
            self.outbox.put(sv)

    # the edge (runs on the Trio thread: cheap, no I/O) ----------------------------------------

    def _validate(self, author: str, payload: bytes,
                  envelope: Callable[[], tuple[bytes, bytes]] | None = None) -> bool:
        with span(VOTE_VALIDATE, peer_id=author):
            return self._check_at_edge(author, payload, envelope)

    def _check_at_edge(self, author: str, payload: bytes,
                       envelope: Callable[[], tuple[bytes, bytes]] | None = None) -> bool:
        try:
            votes = wire.decode(payload)
        except InvalidVote:
            self.counters.add("dropped_garbage")
            return False
        cluster = self.recorder.ledger.cluster
        member = cluster.member_by_peer(author)
        if member is None:
            self.counters.add("dropped_outsider", len(votes))  # R1: counted, never logged
            return False
        if member.banned:
            self.counters.add("dropped_banned", len(votes))  # R10
            return False
        ok = True
        now = now_ms()
        seen: list[int] = []
        for sv in votes:
            age = now - sv.vote.timestamp_ms
            if age > self.cfg.max_vote_age_ms or -age > self.cfg.max_vote_future_ms:
                self.counters.add("dropped_stale")  # an old message replayed, or a wild clock
                ok = False
                continue
            voter = cluster.members.get(sv.vote.node_id)
            if voter is None or not voter.active:
                self.counters.add("dropped_outsider")
                ok = False
            elif not sv.verifies_under(voter.vote_key):
                # R7: not forwarded, but recorded with the author's signed envelope, the proof the
                # decider needs to blame the author peer.
                self.counters.add("invalid_signature")
                try:  # never block the Trio thread: a full inbox drops (and counts) the evidence
                    self.inbox.put_nowait((author, sv, Envelope(*envelope()) if envelope else None))
                except queue.Full:
                    self.counters.add("dropped_inbox_full")
                ok = False
            else:
                seen.append(age)
        self.reception.extend(seen)
        for age in seen:
            self._reception_seconds.observe(max(0, age) / 1000)
        if ok:
            # The pump gets these very bytes next (the host delivers what we accept): hand it the
            # votes parsed here instead of parsing them twice. Bounded: an entry the pump never
            # takes (a message accepted but not delivered) is cleared with the rest.
            if len(self._parsed) >= 4096:
                self._parsed.clear()
            self._parsed[payload] = votes
        return ok

    def reception_summary(self) -> dict[str, float]:
        """p50/p99 of the last receptions at our edge (ms): what ``bench/node_bench.py`` reports."""
        xs = sorted(self.reception)
        if not xs:
            return {"reception_edge_samples": 0}
        return {"reception_edge_samples": len(xs), "reception_edge_p50_ms": xs[len(xs) // 2],
                "reception_edge_p99_ms": xs[min(len(xs) - 1, int(len(xs) * 0.99))]}

    # threads ---------------------------------------------------------------------------------

    def _deliver(self, author: str, payload: bytes) -> None:
        """An accepted gossip message: its votes into the inbox. Runs on the Trio thread: never blocks.

        A full inbox (200,000 votes: the worker is far behind) drops the vote, counted; the log
        brings it when its recorder appends it (R13), as a dropped delivery always did.
        """
        with span(VOTE_RECEIVE, peer_id=author):
            votes = self._parsed.pop(payload, None)
            if votes is None:
                try:
                    votes = wire.decode(payload)
                except InvalidVote:
                    self.counters.add("dropped_garbage")
                    return
            for sv in votes:
                try:
                    self.inbox.put_nowait((author, sv, None))
                except queue.Full:
                    self.counters.add("delivery_inbox_full")

    def _publish_interval(self) -> float:
        members = self.recorder.ledger.cluster.eligible_count()
        return wire.publish_interval_ms(self.cfg.publish_interval_ms, self.cfg.publish_interval_per_member_ms,
                                        members) / 1000

    def _recipients(self, batch: list[SignedVote]) -> set[str] | None:
        """The peers a batch of our votes is meant for (node.duty.recipients); None: every member."""
        if self.cfg.vote_fanout <= 0:
            return None
        members = self.recorder.ledger.cluster.members  # immutable, replaced whole: safe to read here
        eligible = sorted(n for n, m in members.items() if m.eligible)
        out: set[str] = set()
        for sv in batch:
            out.update(members[n].peer_id for n in duty.recipients(sv.vote.tx_id, self.cfg.node_id, eligible,
                                                                  self.cfg.vote_fanout))
        return {p for p in out if _parses(p)}  # a member admitted with a malformed peer id is reached by no one

    def _publish(self) -> None:
        last = -10.0
        while not (self._stopped.is_set() and self.outbox.empty()):
            try:
                first = self.outbox.get(timeout=0.1)
            except queue.Empty:
                continue
            interval = self._publish_interval()
            batch = [first]
            end = max(time.monotonic(), last + interval)  # idle: now; busy: one interval after the last send
            while len(batch) < wire.MAX_BATCH:
                left = end - time.monotonic()
                try:
                    batch.append(self.outbox.get(timeout=left) if left > 0 else self.outbox.get_nowait())
                except queue.Empty:
                    break
            if self.gossip is not None and not self._stopped.is_set():
                self.gossip.publish(wire.encode(batch), to=self._recipients(batch))
                self.counters.add("published_votes", len(batch))
            last = time.monotonic()

    def _work(self) -> None:
        tick, follow = self.cfg.tick_ms / 1000, self.cfg.follow_ms / 1000
        idle_follow = max(follow, self.cfg.follow_idle_ms / 1000)
        next_tick = next_follow = 0.0
        pause = follow
        while True:
            now_s = time.monotonic()
            self._loop_s += 0.2 * (now_s - self._beat - self._idle_s - self._loop_s)
            self._beat = now_s
            # idle, sleep on the inbox until the next read or tick is due (not a 20 ms poll: 50 wakeups/s)
            wait = min(max(min(next_follow, next_tick, now_s + self._hold_wait(now_s)) - now_s, 0.001), 0.1)
            items = self._drain(self.cfg.batch_window_ms / 1000, wait)
            try:
                now = self._route([rules.ReceiveVote(sv, author, now_ms(), env) for author, sv, env in items])
                now += self._release_held(everything=self._stopped.is_set())
                if now:
                    self._record(now)
                elif (not items and self._stopped.is_set() and not self.recorder.deferred and not self.standby
                      and not self._held):
                    return
                if items:
                    pause = follow
                    next_follow = min(next_follow, time.monotonic() + follow)
                if time.monotonic() >= next_follow:
                    if self.recorder.catch_up():
                        pause = follow
                    elif not (self.standby or self.recorder.deferred):
                        pause = min(idle_follow, 2 * pause)
                    next_follow = time.monotonic() + pause
                    self._followed_at = time.monotonic()
                    self._sweep_standby()
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + tick
                    self._periodic(stale_after=idle_follow)
            except StoreUnavailable:
                # Postgres or etcd is down: the worker waits and tries again; nothing is dropped.
                self.counters.add("store_unavailable")
                self._caught_up = False
                self._store_ok_since = None
                next_tick = next_follow = time.monotonic() + min(2.0, 5 * tick)
            if self._stopped.is_set() and not items and (self.recorder.deferred or self.standby):
                time.sleep(0.05)

    def _on_void(self, v: Void) -> None:
        """R13: a row every honest follower ignores; alerted (log_rows_void_total via the projector) and logged."""
        self.counters.add("void_rows")
        log.error("void log row %d written as %.80r: %s", v.position, v.writer, v.reason)

    def _report_faults(self) -> None:
        """Make each signed entry the rules do not produce a violation of its writer (ReportInvalidEntry).

        Every node finds the same faults; the first report is appended, the others find it done.
        """
        faults = self.recorder.ledger.cluster.faults
        todo = [rules.ReportInvalidEntry(p, f.writer, f.reason) for p, f in sorted(faults.items())
                if f.writer != self.cfg.node_id and p not in self._reported]
        if todo:
            self._reported.update(c.position for c in todo)
            self._record(todo)

    def _periodic(self, stale_after: float) -> None:
        """The tick's duties (deadlines, deferred votes, faults, bans, snapshots), on a log read lately.

        The follow schedule reads the log every ``follow_ms`` while anything moves and backs off to
        ``follow_idle_ms`` when nothing does; the tick reads itself only when the last read is older than
        that, so its duties never rest on an older view. (It used to read at every tick: 10 more reads/s
        per node, idle or not, a quarter of an idle node's CPU, issue 15.) The read also proves the store
        answers before the R9 grace starts.
        """
        if time.monotonic() - self._followed_at >= stale_after:
            self.recorder.catch_up()
            self._followed_at = time.monotonic()
        if self._store_ok_since is None:
            self._store_ok_since = time.monotonic()  # the log is writable again: the R9 grace starts now
        self._keep_claim()
        self._caught_up = True
        if self.recorder.deferred:
            self._count(self.recorder.retry_deferred())
        self._tick_deadlines()
        self._report_faults()
        self._enforce_bans()
        if self.recorder.position - self._snapshot_at >= self.cfg.snapshot_every:
            self._snapshot_at = self.recorder.save_snapshot() or self._snapshot_at

    # who records what (node.duty) --------------------------------------------------------------

    def _duty(self, tx_id: str) -> tuple[int, list[str]]:
        """Our rank for ``tx_id`` and the members ranked before us, for the current membership."""
        cluster = self.recorder.ledger.cluster
        if cluster is not self._delays_for[0]:  # the cluster changed (it is immutable): rankings may have
            eligible = sorted(n for n, m in cluster.members.items() if m.eligible)
            if eligible != self._delays_for[1]:
                self._delays = {}
            self._delays_for = (cluster, eligible)
        d = self._delays.get(tx_id)
        if d is None:
            if len(self._delays) >= RANKINGS_KEPT:
                self._delays.clear()
            ahead = duty.ahead_of(tx_id, self.cfg.node_id, self._delays_for[1])  # one ranking per transaction
            d = (len(ahead), ahead)
            self._delays[tx_id] = d
        return d

    def _delay_ms(self, tx_id: str) -> int:
        return self._duty(tx_id)[0] * self.cfg.record_grace_ms

    def _on_event(self, e: Event) -> None:
        if isinstance(e, VoteAccepted) and e.node_id == self.cfg.node_id and e.tx_id in self._waiters:
            self._wake(e.tx_id)
        elif isinstance(e, TransactionOpened):
            heapq.heappush(self._deadlines, (e.deadline_at_ms + self._delay_ms(e.tx_id), e.tx_id))

    def _route(self, cmds: list[rules.ReceiveVote]) -> list[rules.ReceiveVote]:
        """The votes to record now; the rest wait on standby for the member ranked before us."""
        now: list[rules.ReceiveVote] = []
        members = self.recorder.ledger.cluster.members
        txs = self.recorder.ledger.txs
        for c in cmds:
            v = c.vote.vote
            voter = members.get(v.node_id)
            if voter is None or not c.vote.verifies_under(voter.vote_key):
                now.append(c)  # bad input or R7 evidence: only we may have it (never forwarded)
                continue
            tx = txs.get(v.tx_id)
            held = tx.votes.get(v.node_id) if tx else None
            if held is not None and held.value == v.value:
                self.counters.add("duplicate")  # already in the log (R3)
                continue
            ranked = self._duty(v.tx_id)[0]
            if self.cfg.record_grace_ms == 0:
                now.append(c)
                continue
            if ranked == 0:
                if duty.may_hold(self.cfg.record_hold_ms / 1000, self._loop_s):
                    self._hold(c)
                else:
                    now.append(c)
                continue
            key = (v.tx_id, v.node_id, v.value)
            if key not in self.standby:
                arrived = time.monotonic()
                # A vote gossip brought has reached the members ranked before us in the same flood: we
                # wait for them while they are alive (node.duty.take_over). Our own vote has reached
                # only its recipients connected to us: one grace, then we wait only for those.
                # ... plus the hold: the member ranked first may gather a vote that long (release_held)
                own = c.author_peer == self.gossip.peer_id
                grace = duty.under_load(self.cfg.record_grace_ms / 1000, self._loop_s)
                due = arrived + grace * (1 if own else ranked) + self.cfg.record_hold_ms / 1000
                self.standby[key] = (c, arrived, due, own)
                self.counters.add("standby")
        return now

    def _hold(self, c: rules.ReceiveVote) -> None:
        v = c.vote.vote
        _, votes = self._held.setdefault(v.tx_id, (time.monotonic(), {}))
        if (v.node_id, v.value) not in votes:
            votes[(v.node_id, v.value)] = c
            self._held_touched.add(v.tx_id)
            self.counters.add("held")

    def _release_held(self, everything: bool = False) -> list[rules.ReceiveVote]:
        """The held votes whose transaction is due (node.duty.release_held), taken out of the hold.

        Only the transactions that gained a vote since the last pass can have reached their threshold
        or every vote; the others are due only when their hold runs out, oldest first (the dict keeps
        arrival order). A pass costs what arrived and what expired, not everything held.
        """
        touched, self._held_touched = self._held_touched, set()
        if not self._held:
            return []
        txs = self.recorder.ledger.txs
        cluster = self.recorder.ledger.cluster
        threshold = cluster.config.threshold if cluster.config is not None else 1
        eligible = cluster.eligible_count()
        hold_s = 0.0 if everything else self.cfg.record_hold_ms / 1000
        clock = time.monotonic()
        out: list[rules.ReceiveVote] = []

        def release(tx_id: str, why: str) -> None:
            out.extend(self._held.pop(tx_id)[1].values())
            self.counters.add(f"held_released_{why}")

        for tx_id, (first, _) in list(self._held.items()):
            if clock - first < hold_s:
                break
            release(tx_id, "hold")
        for tx_id in touched & self._held.keys():
            first, votes = self._held[tx_id]
            tx = txs.get(tx_id)
            logged = tx.votes if tx is not None else {}
            held = len({node for node, _ in votes if node not in logged})
            # held == 0: each voter held is in the log already: duplicates, or a second value (evidence)
            why = duty.release_held(held, len(logged), threshold, eligible, clock - first, hold_s) or (
                "known" if held == 0 else None)
            if why:
                release(tx_id, why)
        return out

    def _hold_wait(self, now_s: float) -> float:
        """Seconds until the oldest hold runs out (inf: nothing held)."""
        if not self._held:
            return float("inf")
        first, _ = next(iter(self._held.values()))
        return first + self.cfg.record_hold_ms / 1000 - now_s

    def _sweep_standby(self) -> None:
        """Forget standby votes the log now holds; record those whose turn has come."""
        if not self.standby:
            return
        txs = self.recorder.ledger.txs
        seen = self.recorder.last_append
        clock = time.monotonic()
        grace = duty.under_load(self.cfg.record_grace_ms / 1000, self._loop_s)
        patience = self.cfg.record_patience_ms / 1000
        due: list[rules.ReceiveVote] = []
        for key, (cmd, arrived, at, own) in list(self.standby.items()):
            tx = txs.get(key[0])
            held = tx.votes.get(key[1]) if tx else None
            if held is not None and held.value == key[2]:
                del self.standby[key]
                continue
            ahead = self._duty(key[0])[1]
            if own:  # our vote went only to its recipients connected to us: the others do not have it
                members, connected = self.recorder.ledger.cluster.members, self.gossip.connected_peer_ids
                ahead = [m for m in ahead[:self.cfg.vote_fanout or None]
                         if m in members and members[m].peer_id in connected]
            why = duty.take_over(clock, at, arrived, [seen.get(m) for m in ahead], grace, patience)
            if why:
                del self.standby[key]
                due.append(cmd)
                self.counters.add(f"standby_taken_over_{'own' if own else why}")  # own, silent or patience
        if due:
            self.counters.add("standby_taken_over", len(due))
            self._record(due)

    def recorded(self, votes: list[SignedVote]) -> bool:
        """True once every one of these votes of ours is an accepted vote in the cluster log."""
        txs = self.recorder.ledger.txs
        for sv in votes:
            tx = txs.get(sv.vote.tx_id)
            accepted = tx.votes.get(sv.vote.node_id) if tx else None
            if accepted is None or accepted.value != sv.vote.value:
                return False
        return True

    def wait_recorded(self, votes: list[SignedVote], timeout: float) -> bool:
        """Wait until our votes are durable in the log (or the timeout passes).

        Woken when the log accepts one of our votes on a transaction we wait for (``_on_event``), not
        at every move of the log: under an open-loop load a node has a hundred requests in flight, and
        waking them all at each of its ~50 reads a second was thousands of thread switches a second
        for nothing (issue 15). Registered before the first check, so no acceptance is missed; a
        1 s re-check covers a transaction brought back into memory (``Follower.ensure``) without an event.
        """
        end = time.monotonic() + timeout
        pending = collections.deque(votes)
        woken = threading.Event()
        txs = {sv.vote.tx_id for sv in votes}
        with self._waiters_lock:
            for tx_id in txs:
                self._waiters.setdefault(tx_id, set()).add(woken)
        try:
            while True:
                while pending and self.recorded([pending[0]]):
                    pending.popleft()
                if not pending:
                    return True
                left = end - time.monotonic()
                if left <= 0:
                    return False
                woken.wait(min(1.0, left))
                woken.clear()  # then check again: the ledger is updated before the event that sets it
        finally:
            with self._waiters_lock:
                for tx_id in txs:
                    waiting = self._waiters.get(tx_id)
                    if waiting is not None:
                        waiting.discard(woken)
                        if not waiting:
                            del self._waiters[tx_id]

    def _wake(self, tx_id: str) -> None:
        with self._waiters_lock:
            for woken in self._waiters.get(tx_id, ()):
                woken.set()

    def _drain(self, window: float, wait: float = 0.02) -> list[tuple[str, SignedVote, Envelope | None]]:
        """Received votes: the first within ``wait`` s, then those that follow it within ``window``."""
        t0 = time.monotonic()
        try:
            items = [self.inbox.get(timeout=wait)]
        except queue.Empty:
            return []
        finally:
            self._idle_s = time.monotonic() - t0
        end = time.monotonic() + window
        while len(items) < self.cfg.max_batch:
            try:
                items.append(self.inbox.get(timeout=max(0.0, end - time.monotonic())))
            except queue.Empty:
                break
        return items

    def _record(self, cmds: list[rules.Command]) -> None:
        delay = 0.05
        while True:
            try:
                t0 = time.perf_counter()
                results = self.recorder.execute(cmds)
                # what the write path sees under load: batch sizes and time per execute (issue 15)
                self.counters.add("record_batches")
                self.counters.add("record_commands", len(cmds))
                self.counters.add("record_us", int((time.perf_counter() - t0) * 1e6))
                break
            except StoreUnavailable:
                # Postgres or etcd is down: keep the votes and retry, never drop them.
                self.counters.add("store_unavailable")
                self._store_ok_since = None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._count(results)
        self._enforce_bans()

    def _count(self, results) -> None:
        for r in results:
            if r.status is Status.REJECTED:
                self.counters.add(f"dropped_{type(r.error).__name__}")
            else:
                self.counters.add(r.status.value)

    def _tick_deadlines(self) -> None:
        """R9 at each deadline; the member ranked r ticks r * grace late (the one before it usually has).

        Deadlines are judged against the log, and a store outage must not trip one: we tick only once
        the log has been writable for ``outage_grace_ms`` without a break (after an outage, votes signed
        before the deadline are recorded first), and we record the votes we hold for a transaction in
        the same batch, before its deadline. What an outage can delay it cannot hold open: every honest
        node with a working store ticks within the grace, whatever any other member does.
        """
        ok_since = self._store_ok_since
        if ok_since is None or time.monotonic() - ok_since < self.cfg.outage_grace_ms / 1000:
            return
        now = now_ms()
        txs = self.recorder.ledger.txs
        due: list[str] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, tx_id = heapq.heappop(self._deadlines)
            tx = txs.get(tx_id)
            if tx is not None and not tx.deadline_fired:
                due.append(tx_id)
        if not due:
            return
        due_set = set(due)
        held = [key for key in self.standby if key[0] in due_set]
        votes = [self.standby.pop(key)[0] for key in held]
        for tx_id in due_set & self._held.keys():
            votes.extend(self._held.pop(tx_id)[1].values())
        self._record([*votes, *(rules.CheckDeadline(tx_id, now) for tx_id in due)])
        for tx_id in due:  # not fired after all (a refused or deferred tick): look again next tick
            tx = txs.get(tx_id)
            if tx is not None and not tx.deadline_fired:
                heapq.heappush(self._deadlines, (now + int(self.cfg.tick_ms), tx_id))

    def _keep_claim(self) -> None:
        """Take the instance claim again if it lapsed (etcd out of reach for its TTL): R14 holds meanwhile,
        since a lapsed claim signs nothing; if another process took the key in the gap, we stop for good."""
        claim = self.signer.claim if self.signer else None
        if claim is None or claim.alive() or claim.lost is None:
            return  # holds, or waits for etcd to confirm its lease again (its keep-alive goes on)
        try:
            fresh = InstanceClaim.acquire(self.cfg.etcd, self.cfg.etcd_prefix, self.cfg.node_id)
        except StoreUnavailable:
            return  # still out of reach: try again next tick
        except InstanceClaimed as e:
            if e.holder == claim.holder.text():
                return  # our own key, under our lapsed lease, not yet removed by etcd: try again next tick
            log.error("instance claim for %s taken by %s: this process stops signing", self.cfg.node_id, e.holder)
            self._stopped.set()
            return
        claim.close()
        self.signer.replace_claim(fresh)
        self.counters.add("instance_reclaimed")

    def _enforce_bans(self) -> None:
        """R10 at the network edge: blacklist, disconnect, drop from the DHT, refuse reconnects.

        Also keeps the gossip host's member allowlist (only members in the mesh) in step with the
        log. Whatever the log holds (a peer id no admission check ever saw), a ban, unban or removal
        never takes the worker down: a peer id the host refuses is logged and counted.
        """
        cluster = self.recorder.ledger.cluster
        if cluster is self._enforced_for:
            return
        self._enforced_for = cluster
        members = cluster.members.values()
        self._set_allowed({m.peer_id for m in members if m.active})
        banned = {m.peer_id for m in members if m.banned and m.node_id != self.cfg.node_id}
        for peer in banned - self._banned:
            self._on_gossip(self.gossip.ban, peer, "peers_banned")
        for peer in self._banned - banned:
            self._on_gossip(self.gossip.unban, peer, "peers_unbanned")
        self._banned = banned

    def _set_allowed(self, peers: set[str]) -> None:
        usable = {p for p in peers if _parses(p)}
        if usable != peers:
            self.counters.add("bad_member_peer_ids", len(peers - usable))
        if usable != self._allowed:
            self._on_gossip(self.gossip.set_allowed, usable, "allowlist_updates")
            self._allowed = usable

    def _on_gossip(self, call, arg, counter: str) -> None:
        try:
            call(arg)
            self.counters.add(counter)
        except ValueError as e:
            log.error("gossip host refused %s(%.80s): %s", call.__name__, arg, e)
            self.counters.add("gossip_refusals")

    # reads for the API -----------------------------------------------------------------------

    def _fold_from_log(self, tx_id: str) -> rules.Tx | None:
        """A transaction that left memory, folded from its stream (API threads: the worker's ledger is untouched)."""
        follower = self.recorder.follower
        state = rules.State(self.recorder.ledger.cluster)
        try:
            rows = self.recorder.store.read_stream(tx_stream(tx_id))
        except StoreUnavailable:
            return None
        for r in rows:
            if r.position not in follower.void_positions and r.position <= follower.position:
                state = rules.evolve(state, r.event())
        return state.tx

    def tx_view(self, tx_id: str) -> dict | None:
        tx = self.recorder.ledger.txs.get(tx_id)
        if tx is None and tx_id in self.recorder.follower.evicted:  # finished long ago: read it from the log
            tx = self._fold_from_log(tx_id)
        if tx is None:
            return None
        return {"tx_id": tx.tx_id, "status": tx.status, "value": tx.value,
                "votes": {n: v.value for n, v in sorted(tx.votes.items())}, "deadline_at_ms": tx.deadline_at_ms}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parses(peer_id: str) -> bool:
    """A peer id the gossip host can use (the log may hold anything: R13 voids forged rows, old logs remain)."""
    try:
        ID.from_base58(peer_id)
    except Exception:  # base58/multihash errors vary by library version
        return False
    return True
