"""The submitter: writes every consensus value to the chain exactly once (R8, R11), whatever crashes.

It is a synchronous loop, like the Recorder it drives. Each round it

1. follows the log (its own :class:`~submitter.index.FollowingRecorder`);
2. *claims* transactions in THRESHOLD_REACHED or SUBMITTING: takes the etcd lease lock
   ``/locks/submission/<tx>`` and appends ``StartSubmission`` with the lock's create revision as
   the fencing token. From here on every command names that revision; the decider answers
   ``StaleLock`` as soon as someone with a later lock has claimed the transaction, and we drop it;
3. *reconciles* a transaction that had been claimed before (recovery after a crash, or a takeover):
   before anything new is signed it asks the contract's ``recordOf(tx_id)`` and the chain for every
   transaction hash the log recorded as signed; a mined one is confirmed, a recorded raw transaction
   the node does not know is re-broadcast byte for byte, a stuck one is replaced at the same nonce;
4. *signs* the ones that need a transaction: reserves nonces (``fence.NonceBook``, etcd CAS),
   signs locally, and appends ``SubmissionSigned`` with the raw bytes BEFORE broadcasting (R11);
5. *broadcasts* (in nonce order) and appends ``SubmissionBroadcast``;
6. *watches* receipts without blocking, and appends ``SubmissionConfirmed`` once the receipt has
   the configured confirmations; then releases the lock.

Work is batched per phase (one etcd request, one log append per phase per round), so throughput
grows with load while a single transaction still takes one pass through the phases.

Failures are classified from ``chain.errors``: a pool refusal that means "already there" (nonce too
low, already known) sends us to look the transaction up; replacement underpriced or fee too low
re-sign at the same nonce with higher fees; insufficient funds, an unreachable chain and other pool
refusals back off (exponential with jitter, tenacity's ``wait_exponential_jitter``) and are logged
once per streak as a retryable SubmissionFailed; the contract's AlreadyRecorded is a confirmation if
one of our logged transactions wrote it, else an alert (SubmissionFailed, retryable=False).

The chain is reached only through the port ``chain.port.ChainPort``: the JSON-RPC client
(``chain.ThresholdRecordClient``) in production, or ``chain.memory.MemoryChain`` in a test.

The value written is the log's consensus value and the certificate hash is the log's BLAKE3
``ThresholdReached.certificate_hash``, so the on-chain record can be compared with the log directly.
(There is no second, chain-side certificate hash: the log's is the one on chain.)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from eth_account.signers.local import LocalAccount
from tenacity import RetryCallState, wait_exponential_jitter

from chain import (
    AlreadyKnown,
    BadInput,
    ChainError,
    ChainPort,
    ChainUnreachable,
    ContractRevert,
    Fees,
    FeeTooLow,
    InsufficientFunds,
    NonceTooLow,
    ReplacementUnderpriced,
    TxRejected,
    WrongChainId,
    validate_record_args,
)
from events import rules
from events.errors import NotSubmittable, StaleLock, StoreUnavailable, ThresholdVoteError, UnknownTransaction
from events.log_waiter import LogWaiter
from events.store import EventStore
from events.writers import RowSigner, submitter_writer
from observability import tracing
from recording.etcd_guard import EtcdGuard
from recording.recorder import Result, Status
from submitter.fence import LOCK_TTL, Held, NonceBook, SubmissionLocks
from submitter.index import FollowingRecorder, LogIndex, Signed

log = logging.getLogger(__name__)

FAILPOINT_ENV = "TVOTE_SUBMITTER_CRASH"
FAILPOINTS = ("started", "signed-locally", "signed", "sent", "broadcast", "mined", "confirmed")


class Phase(Enum):
    RECONCILE = "reconcile"  # look at the chain before doing anything new (recovery, takeover, stuck)
    SIGN = "sign"
    SEND = "send"
    WAIT = "wait"


class Fatal(ThresholdVoteError):
    """A misconfiguration found while running (wrong chain): stop, nothing more is sent."""


@dataclass
class Work:
    """One transaction we hold the lock for, and where it stands."""

    tx_id: str
    revision: int
    phase: Phase
    current: Signed | None = None  # the signed transaction we are pushing
    replace: bool = False  # next signature replaces `current` at the same nonce with higher fees
    stuck: bool = False  # reconcile was asked because `current` sat unmined too long
    announced: set[str] = field(default_factory=set)  # hashes whose SubmissionBroadcast we appended
    sent_at: float = 0.0
    next_try: float = 0.0
    attempt: int = 0
    error_logged: str | None = None
    first: bool = False  # claimed for the first time: it cannot hold a nonce reservation yet


_BACKOFF = wait_exponential_jitter(multiplier=0.05, max=5.0, exp_base=2, jitter=0.05)


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (tenacity's exponential backoff with jitter)."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return float(_BACKOFF(state))


SNAPSHOT_EVERY = 50_000  # log rows between two snapshots of the submitter's follower and index


class Submitter:
    def __init__(
        self,
        store: EventStore,
        guard: EtcdGuard,
        client: ChainPort,
        account: LocalAccount,
        *,
        name: str,
        log_signer: RowSigner,
        confirmations: int = 0,
        lock_ttl: int = LOCK_TTL,
        stuck_after: float = 15.0,
        batch: int = 256,
        poll: float = 0.005,
        waiter: LogWaiter | None = None,
        idle_wait: float = 1.0,
        failpoint: str | None = None,
    ) -> None:
        self.index = LogIndex()
        if log_signer.writer != submitter_writer(name):
            raise ValueError(f"the log signer {log_signer.writer!r} is not submitter:{name}")
        self.recorder = FollowingRecorder(store, guard, log_signer, self.index)
        self.guard = guard
        self.client = client
        self.account = account
        self.name = name
        self.chain_id = client.chain_id
        self.confirmations = confirmations
        self.stuck_after = stuck_after
        self.batch = batch
        self.poll = poll
        self.waiter = waiter  # when idle, sleep until the log moves (up to idle_wait), not a poll
        self.idle_wait = idle_wait
        self.failpoint = failpoint if failpoint is not None else os.environ.get(FAILPOINT_ENV) or None
        if self.failpoint is not None and self.failpoint not in FAILPOINTS:
            raise ValueError(f"unknown failpoint {self.failpoint!r}; one of {FAILPOINTS}")
        self.locks = SubmissionLocks(guard.client, guard.prefix, name, lock_ttl)
        self.nonces = NonceBook(guard.client, guard.prefix, self.chain_id, account.address)
        self.work: dict[str, Work] = {}
        self._claim_after: dict[str, float] = {}
        self._fee_cache: tuple[float, Fees] | None = None
        self._nonce_cache: tuple[float, int] | None = None
        self.stats = {"claimed": 0, "signed": 0, "sent": 0, "rebroadcast": 0, "replaced": 0, "confirmed": 0,
                      "stale": 0, "failed": 0, "filled": 0}

    # the loop ---------------------------------------------------------------------------------------

    def recover(self) -> int:
        """On start: replay the log, then re-broadcast every logged raw transaction that is neither mined
        nor known to the node (R11), whoever's lock covers its transaction.

        Broadcasting a raw transaction the log already holds is always safe: it is the very transaction
        that was recorded as signed, at most one transaction per nonce can be mined, and it can only
        write its own tx id (which the contract writes once). Doing it at once, rather than when each
        transaction's lock is free again, closes the nonce gaps a crash left behind, so transactions
        signed after the restart are not held up for a lock TTL. Everything else about an unfinished
        submission (receipts, ``recordOf``, confirmation) happens when its lock is taken, in
        ``_reconcile``, before anything new is signed for it. Returns how many were re-broadcast.
        """
        self.recorder.catch_up()
        mined: dict[str, int] = {}
        sent = 0
        for (chain_id, sender), book in self.index.by_nonce.items():
            if chain_id != self.chain_id:
                continue
            for nonce in sorted(book):
                s = book[nonce]
                if s.tx_id not in self.index.pending:
                    continue
                try:
                    if sender not in mined:
                        mined[sender] = self.client.mined_nonce(s.sender)
                    if nonce < mined[sender] or self.client.get_transaction(s.hash_bytes) is not None:
                        continue
                    self.client.send_raw(s.raw_bytes)
                    sent += 1
                except (TxRejected, ChainUnreachable) as e:
                    log.info("recovery: re-broadcast of %s (nonce %d) not done now: %s", s.tx_id, nonce, e)
        self.stats["rebroadcast"] += sent
        if sent:
            log.warning("recovery: re-broadcast %d logged raw transaction(s)", sent)
        return sent

    def run(self, stop: threading.Event) -> None:
        """Rounds until ``stop`` is set; outages of Postgres, etcd or the chain only slow it down."""
        failures = 0
        try:
            loaded = self.recorder.load_snapshot()  # bounded restart time: fold only what came after it
            if loaded:
                log.warning("%s starts from its snapshot at position %d", self.name, loaded)
        except StoreUnavailable:
            pass  # no snapshot read: the loop below folds the log from the start once the store answers
        snapshot_at = self.recorder.position
        try:
            self.recover()
        except (StoreUnavailable, ChainError) as e:
            log.warning("recovery pass skipped (%s); each transaction is reconciled when claimed", e)
        while not stop.is_set():
            try:
                progress = self.run_once()
                failures = 0
                if self.recorder.position - snapshot_at >= SNAPSHOT_EVERY:
                    snapshot_at = self.recorder.save_snapshot() or snapshot_at
            except StoreUnavailable as e:
                failures += 1
                log.warning("log/etcd unavailable (%s); retrying", e)
                stop.wait(backoff_delay(failures))
                continue
            if not progress:
                self._pause(stop)

    def _pause(self, stop: threading.Event) -> None:
        """Nothing moved this round. With work in hand, look again soon (receipts and locks are not in the
        log); with none, sleep until the log moves: a 5 ms poll of an idle log was 8 % of a core."""
        if self.waiter is None or not self.idle():
            stop.wait(self.poll)
        else:
            self.waiter.wait(self.idle_wait)

    def run_once(self) -> int:
        """One pass over every phase; returns how many steps made progress (0: idle)."""
        self.recorder.catch_up()
        if not self.locks.alive():
            self._lease_lost()
        progress = self._claim()
        now = time.monotonic()
        for w in [w for w in self.work.values() if w.phase is Phase.RECONCILE and w.next_try <= now]:
            self._reconcile(w)
            progress += 1
        now = time.monotonic()
        progress += self._sign([w for w in self.work.values() if w.phase is Phase.SIGN and w.next_try <= now])
        now = time.monotonic()
        progress += self._send([w for w in self.work.values() if w.phase is Phase.SEND and w.next_try <= now])
        now = time.monotonic()
        progress += self._watch([w for w in self.work.values() if w.phase is Phase.WAIT and w.next_try <= now])
        return progress

    def idle(self) -> bool:
        """Nothing pending in the log and nothing in hand."""
        return not self.work and not self.index.pending

    def close(self) -> None:
        """Revoke the lock lease so another submitter can take over at once (a crash waits for the TTL)."""
        self.locks.close(revoke=True)
        if self.waiter is not None:
            self.waiter.close()

    # step 2: claim ----------------------------------------------------------------------------------

    def _claim(self) -> int:
        now = time.monotonic()
        candidates: list[str] = []
        prior: dict[str, bool] = {}
        for tx_id in sorted(self.index.pending):
            if tx_id in self.work or self._claim_after.get(tx_id, 0.0) > now:
                continue
            tx = self.recorder.ledger.txs.get(tx_id)
            if tx is None or tx.status not in (rules.THRESHOLD_REACHED, rules.SUBMITTING):
                self.index.pending.discard(tx_id)  # aborted, expired or confirmed: never submitted (R8)
                continue
            candidates.append(tx_id)
            prior[tx_id] = tx.status == rules.SUBMITTING or bool(self.index.signed.get(tx_id))
            if len(candidates) >= self.batch:
                break
        if not candidates:
            return 0
        with tracing.span(tracing.SUBMISSION_LOCK, transactions=len(candidates)):
            held = self.locks.acquire(candidates)
        for tx_id in candidates:
            if tx_id not in held:  # another live submitter holds it; look again soon (takeover < TTL)
                self._claim_after[tx_id] = now + min(0.5, self.locks.ttl / 6)
        if not held:
            return 0
        order = list(held)
        results = self.recorder.execute([rules.StartSubmission(t, self.name, held[t]) for t in order])
        release: list[Held] = []
        for tx_id, res in zip(order, results, strict=True):
            rev = held[tx_id]
            if res.status in (Status.APPENDED, Status.DUPLICATE):
                self.work[tx_id] = Work(tx_id, rev, Phase.RECONCILE if prior[tx_id] else Phase.SIGN,
                                        first=not prior[tx_id])
                self._claim_after.pop(tx_id, None)
                self.stats["claimed"] += 1
                continue
            release.append(Held(tx_id, rev))
            if res.status is Status.DEFERRED:
                self._claim_after[tx_id] = now + 0.1
            elif isinstance(res.error, StaleLock):
                self.index.problem(f"{tx_id}: the log holds a claim newer than our fresh lock ({res.error}); "
                                   "was etcd restored from an old snapshot?")
                self._claim_after[tx_id] = now + self.locks.ttl
            elif isinstance(res.error, NotSubmittable | UnknownTransaction):
                log.info("%s not submittable: %s", tx_id, res.error)
                self.index.pending.discard(tx_id)
            else:
                self.index.problem(f"{tx_id}: StartSubmission refused: {res.error}")
                self._claim_after[tx_id] = now + 5
        self.locks.release(release)
        self._fail_at("started")
        return len(held)

    # step 3: reconcile --------------------------------------------------------------------------

    def _reconcile(self, w: Work) -> None:
        """Recovery for one transaction: ask the contract and the chain before anything new is signed."""
        signed = list(self.index.signed.get(w.tx_id, {}).values())
        try:
            record = self.client.record_of(w.tx_id)
            reverted: list[Signed] = []
            for s in signed:
                receipt = self.client.get_receipt(s.hash_bytes)
                if receipt is not None and receipt["status"] == 1:
                    w.current, w.phase, w.sent_at, w.stuck = s, Phase.WAIT, time.monotonic(), False
                    return
                if receipt is not None:
                    reverted.append(s)
            if record.exists:
                tx = self.recorder.ledger.txs[w.tx_id]
                ours = record.value == tx.value and record.certificate_hash.hex() == self.index.certs.get(w.tx_id)
                what = "the same value and certificate" if ours else (
                    f"value {record.value}, certificate 0x{record.certificate_hash.hex()}")
                self._fail(w, f"already recorded on chain with {what} by a transaction the log does not hold "
                              f"(block {record.block_number}): alert", retryable=False)
                return
            for s in reverted:  # mined but failed, and no record: say why
                try:
                    self.client.wait_for_receipt(s.hash_bytes, timeout=5)
                except ContractRevert as e:
                    self._fail(w, f"{type(e).__name__}: {e}", retryable=False)
                    return
            if not signed:
                w.current, w.phase = None, Phase.SIGN
                return
            latest = signed[-1]
            mined = self.client.mined_nonce(latest.sender)
            if latest.nonce < mined:
                if self.client.get_receipt(latest.hash_bytes) is None:
                    # Its nonce was consumed by a transaction outside the log, so none of ours can be
                    # mined, and R11 allows no other nonce for this transaction: an operator decides.
                    self._fail(w, f"nonce {latest.nonce} of {latest.sender} was consumed by a transaction the "
                                  "log does not hold; no other nonce may be signed (R11): alert", retryable=False)
                return  # else: mined just now; the next reconcile confirms it
            known = self.client.get_transaction(latest.hash_bytes)
            w.current = latest
            if known is None:
                w.phase = Phase.SEND  # R11: re-broadcast the recorded raw transaction, byte for byte
                self.stats["rebroadcast"] += 1
            elif w.stuck and latest.nonce > mined:
                # Not underpriced: waiting for a lower nonce of the sender. Fill the gap with the raw
                # transactions the log holds for it (a dead holder's, signed but never broadcast); a
                # nonce reserved but never signed is filled when its own transaction is taken over.
                self._fill_gap(latest.sender, mined, latest.nonce)
                w.phase, w.sent_at = Phase.WAIT, time.monotonic()
            elif w.stuck and latest.sender.lower() == self.account.address.lower():
                w.replace, w.phase = True, Phase.SIGN  # same nonce, higher fees
            else:
                w.phase, w.sent_at = Phase.WAIT, time.monotonic()
            w.stuck = False
        except ChainUnreachable as e:
            self._retry_later([w], e)
        except ChainError as e:
            self._retry_later([w], e, record=True)

    def _fill_gap(self, sender: str, low: int, high: int) -> None:
        """Nonces ``low..high-1`` of ``sender`` are missing on chain and hold up ``high``.

        A nonce the log holds a raw transaction for is filled with it (re-broadcast, R11). A nonce
        reserved for a transaction that will never sign it (it ended in an alert, or was written with
        another nonce) is filled with a zero-value transfer to ourselves: it cannot write a record, it
        only lets the sender's later nonces be mined. A nonce whose transaction is still live is left
        to that transaction (if a filler took it first, that transaction finds its nonce consumed and
        signs anew, see ``_reconcile``).
        """
        book = self.index.by_nonce.get((self.chain_id, sender.lower()), {})
        ours = sender.lower() == self.account.address.lower()
        for n in range(low, high):
            s = book.get(n)
            try:
                if s is not None:
                    self.client.send_raw(s.raw_bytes)
                    self.stats["rebroadcast"] += 1
                    continue
                owner = self.nonces.owner_of(n) if ours else None
                if ours and (owner is None or owner in self.index.dead or owner not in self.index.pending):
                    log.warning("nonce %d of %s is orphaned (reserved for %s); filling it with a no-op", n, sender,
                                owner)
                    self.client.send_raw(self._noop(n))
                    self.stats["filled"] += 1
                else:
                    log.info("nonce %d of %s: reserved for %s, not signed yet; it will fill it", n, sender, owner)
            except (TxRejected, ChainUnreachable, StoreUnavailable) as e:
                log.info("gap nonce %d: %s", n, type(e).__name__)

    def _noop(self, nonce: int) -> bytes:
        fees = self._fees()
        tx = {"type": 2, "chainId": self.chain_id, "nonce": nonce, "to": self.account.address, "value": 0,
              "gas": 21_000, "maxFeePerGas": fees.max_fee_per_gas,
              "maxPriorityFeePerGas": fees.max_priority_fee_per_gas}
        return bytes(self.account.sign_transaction(tx).raw_transaction)

    # step 4: sign -----------------------------------------------------------------------------------

    def _sign(self, works: list[Work]) -> int:
        """Sign a record transaction for each, and log it (SubmissionSigned) before anything is sent.

        A transaction's first signature fixes its (chain, sender, nonce): the decider accepts a later
        signature only at that nonce (a fee bump), so at most one of them can ever be mined (R11). A
        first signature takes a reserved nonce; a later one re-uses the fixed nonce with fees above
        every signature logged there. A transaction first signed with another submitter's key cannot
        be re-signed by us: we can only re-broadcast its logged raw transactions.
        """
        if not works:
            return 0
        me = self.account.address
        ready: list[tuple[Work, int, bytes, int | None]] = []
        for w in works:
            tx = self.recorder.ledger.txs[w.tx_id]
            try:
                cert = bytes.fromhex(self.index.certs.get(w.tx_id, ""))
                validate_record_args(w.tx_id, tx.value, cert)  # type: ignore[arg-type]
            except (BadInput, ValueError) as e:
                self._fail(w, f"bad input, nothing sent: {e}", retryable=False)
                continue
            fixed = tx.nonce
            if fixed is not None and (fixed[0] != self.chain_id or fixed[1].lower() != me.lower()):
                logged = list(self.index.signed.get(w.tx_id, {}).values())
                w.replace = False
                w.current = logged[-1] if logged else None
                w.phase, w.sent_at = (Phase.SEND, 0.0) if w.current else (Phase.RECONCILE, 0.0)
                self._retry_later([w], ChainError(f"first signed by {fixed[1]} on chain {fixed[0]}: re-broadcast only"))
                continue
            ready.append((w, tx.value, cert, fixed[2] if fixed else None))  # type: ignore[arg-type]
        if not ready:
            return 0
        try:
            fees = self._fees()
            fresh = [w for w, _, _, fixed in ready if fixed is None]
            nonces: dict[str, int] = {}
            if fresh:
                pending = self._pending_nonce()
                first = frozenset(w.tx_id for w in fresh if w.first)
                # the mined nonce only matters to an earlier reservation, which a first claim cannot hold
                mined = 0 if len(first) == len(fresh) else self.client.mined_nonce(me)
                floor = max(pending, self.index.next_nonce_floor(self.chain_id, me))
                nonces = self.nonces.reserve([w.tx_id for w in fresh], floor, mined, first)
        except (ChainError, StoreUnavailable) as e:
            self._retry_later([w for w, _, _, _ in ready], e)
            return 0
        signed: list[tuple[Work, Any]] = []
        for w, value, cert, fixed in sorted(ready, key=lambda r: r[3] if r[3] is not None else nonces[r[0].tx_id]):
            if fixed is not None:
                top = _max_fees([s.fees for s in self.index.signed.get(w.tx_id, {}).values() if s.nonce == fixed])
                nonce, use = fixed, (_max_fees([top.bumped(), fees]) if top else fees)
                self.stats["replaced"] += 1
            else:
                nonce, use = nonces[w.tx_id], fees
            signed.append((w, self.client.sign_record(self.account, w.tx_id, value, cert, nonce=nonce, fees=use)))
        self._fail_at("signed-locally")
        cmds = [rules.RecordSigned(w.tx_id, w.revision, self.chain_id, s.sender, s.nonce, "0x" + s.tx_hash.hex(),
                                   "0x" + s.raw.hex()) for w, s in signed]
        with tracing.span(tracing.SUBMISSION_PERSIST, step="signed", transactions=len(cmds)):
            results = self.recorder.execute(cmds)
        done = 0
        for (w, s), res in zip(signed, results, strict=True):
            if self._refused(w, res):
                continue
            w.current = self.index.signed[w.tx_id]["0x" + s.tx_hash.hex()]
            w.replace, w.phase, w.attempt, w.first = False, Phase.SEND, 0, False
            self.stats["signed"] += 1
            done += 1
        self._fail_at("signed")
        return done

    def _fees(self) -> Fees:
        """Suggested fees, cached for a second: the base fee moves per block, and a fee that fell
        behind is answered by the node (FeeTooLow) and re-signed higher."""
        now = time.monotonic()
        if self._fee_cache is None or now - self._fee_cache[0] > 1.0:
            self._fee_cache = (now, self.client.suggest_fees())
        return self._fee_cache[1]

    def _pending_nonce(self) -> int:
        """The chain's pending nonce for our sender, cached for a second.

        It is only a floor against transactions sent outside this system (or an etcd that lost its
        keys): our own nonces are covered by the log and the etcd reservations. A stale floor costs
        a NonceTooLow, which clears the cache and sends the transaction through reconcile.
        """
        now = time.monotonic()
        if self._nonce_cache is None or now - self._nonce_cache[0] > 1.0:
            self._nonce_cache = (now, self.client.pending_nonce(self.account.address))
        return self._nonce_cache[1]

    # step 5: broadcast ------------------------------------------------------------------------------

    def _send(self, works: list[Work]) -> int:
        if not works:
            return 0
        sent: list[Work] = []
        with tracing.span(tracing.SUBMISSION_SUBMIT, transactions=len(works)):
            self._broadcast(works, sent)
        self._fail_at("sent")
        # Fast path: with automine (or a fast block) the receipt is often there already; then the
        # broadcast and the confirmation are appended together (one etcd CAS, one Postgres commit).
        # The "broadcast" failpoint keeps them apart so a kill can land between the two.
        mined: dict[str, int] = {}
        if self.confirmations == 0 and self.failpoint != "broadcast" and sent:
            try:
                receipts = self.client.get_receipts([w.current.hash_bytes for w in sent])  # type: ignore[union-attr]
            except ChainUnreachable:
                receipts = [None] * len(sent)
            for w, receipt in zip(sent, receipts, strict=True):
                if receipt is not None and receipt["status"] == 1:
                    mined[w.tx_id] = int(receipt["blockNumber"])
        todo = [w for w in sent if w.current and w.current.tx_hash not in w.announced]
        cmds: list[rules.Command] = [rules.RecordBroadcast(w.tx_id, w.revision, w.current.tx_hash)  # type: ignore[union-attr]
                                     for w in todo]
        if mined:
            self._fail_at("mined")
        done = [w for w in sent if w.tx_id in mined]
        cmds += [rules.RecordConfirmed(w.tx_id, w.revision, w.current.tx_hash, mined[w.tx_id])  # type: ignore[union-attr]
                 for w in done]
        with tracing.span(tracing.SUBMISSION_PERSIST, step="broadcast", transactions=len(cmds)):
            results = self.recorder.execute(cmds) if cmds else []
        for w, res in zip(todo, results[:len(todo)], strict=True):
            if not self._refused(w, res):
                w.announced.add(w.current.tx_hash)  # type: ignore[union-attr]
        self._finish([(w, res) for w, res in zip(done, results[len(todo):], strict=True)])
        now = time.monotonic()
        for w in sent:
            if w.tx_id in self.work:
                w.phase, w.sent_at, w.attempt = Phase.WAIT, now, 0
                self.stats["sent"] += 1
        self._fail_at("broadcast")
        return len(sent)

    def _broadcast(self, works: list[Work], sent: list[Work]) -> None:
        """send_raw in nonce order; classify the node's answer (chain.errors) into the next phase."""
        for w in sorted(works, key=lambda w: w.current.nonce if w.current else -1):
            assert w.current is not None
            try:
                self.client.send_raw(w.current.raw_bytes)
                sent.append(w)
            except AlreadyKnown:
                sent.append(w)
            except NonceTooLow:
                self._nonce_cache = None
                w.phase = Phase.RECONCILE  # used already: by this very transaction, or another one
            except (ReplacementUnderpriced, FeeTooLow) as e:
                self._fee_cache = None
                log.info("%s: %s; re-signing nonce %d with higher fees", w.tx_id, type(e).__name__, w.current.nonce)
                w.replace, w.phase = True, Phase.SIGN
            except WrongChainId as e:
                raise Fatal(str(e)) from e
            except InsufficientFunds as e:
                self._retry_later([w], e, record=True)
            except ChainUnreachable as e:
                self._retry_later([w], e)
            except TxRejected as e:
                self._retry_later([w], e, record=True)

    # step 6: receipts and confirmations -------------------------------------------------------------

    def _watch(self, works: list[Work]) -> int:
        if not works:
            return 0
        head = 0
        if self.confirmations:
            try:
                head = self.client.block_number()
            except ChainError as e:  # unreachable: look again after a backoff
                self._retry_later(works, e)
                return 0
        now = time.monotonic()
        confirmed: list[tuple[Work, int]] = []
        try:
            receipts = self.client.get_receipts([w.current.hash_bytes for w in works])  # type: ignore[union-attr]
        except ChainUnreachable as e:
            self._retry_later(works, e)
            return 0
        for w, receipt in zip(works, receipts, strict=True):
            assert w.current is not None
            if receipt is None:
                if now - w.sent_at > self.stuck_after:
                    w.stuck, w.phase = True, Phase.RECONCILE  # dropped, nonce taken, or underpriced
                continue
            if receipt["status"] != 1:
                w.phase = Phase.RECONCILE  # AlreadyRecorded (ours or not?) or another revert: look
                continue
            if self.confirmations == 0 or head - int(receipt["blockNumber"]) >= self.confirmations:
                confirmed.append((w, int(receipt["blockNumber"])))
        if not confirmed:
            return 0
        self._fail_at("mined")
        with tracing.span(tracing.SUBMISSION_PERSIST, step="confirmed", transactions=len(confirmed)):
            results = self.recorder.execute(
                [rules.RecordConfirmed(w.tx_id, w.revision, w.current.tx_hash, b) for w, b in confirmed])  # type: ignore[union-attr]
        self._finish([(w, res) for (w, _), res in zip(confirmed, results, strict=True)])
        return len(confirmed)

    def _finish(self, outcomes: list[tuple[Work, Result]]) -> None:
        """SubmissionConfirmed is in the log: forget the transaction and release its lock."""
        release = []
        for w, res in outcomes:
            if self._refused(w, res):
                continue
            self.work.pop(w.tx_id, None)
            self.index.pending.discard(w.tx_id)
            release.append(Held(w.tx_id, w.revision))
            self.stats["confirmed"] += 1
        if release:
            self._fail_at("confirmed")
        self.locks.release(release)

    # helpers ------------------------------------------------------------------------------------------

    def _refused(self, w: Work, res: Result) -> bool:
        """True if the log refused the step; a stale claim (fenced out) drops the transaction."""
        if res.status in (Status.APPENDED, Status.DUPLICATE):
            return False
        if res.status is Status.DEFERRED:
            self._retry_later([w], StoreUnavailable("append deferred"))
            return True
        if isinstance(res.error, StaleLock | NotSubmittable):
            log.warning("%s: fenced out at revision %d (%s); stopping", w.tx_id, w.revision, res.error)
            self.stats["stale"] += 1
            self.work.pop(w.tx_id, None)
            self.locks.release([Held(w.tx_id, w.revision)])
            return True
        self.index.problem(f"{w.tx_id}: log refused a submission step: {res.error}")
        self._retry_later([w], StoreUnavailable(str(res.error)))
        return True

    def _retry_later(self, works: list[Work], error: Exception, *, record: bool = False) -> None:
        now = time.monotonic()
        for w in works:
            w.attempt += 1
            w.next_try = now + backoff_delay(w.attempt)
            text = f"{type(error).__name__}: {error}"
            if record and w.error_logged != text and w.tx_id in self.work:
                w.error_logged = text
                self._record_failure(w, text, retryable=True)
        if works:
            log.info("%d submission(s) backing off after %s: %s", len(works), type(error).__name__, error)

    def _fail(self, w: Work, text: str, *, retryable: bool) -> None:
        log.error("%s: %s", w.tx_id, text)
        self._record_failure(w, text, retryable=retryable)
        if not retryable:
            self.work.pop(w.tx_id, None)
            self.index.pending.discard(w.tx_id)
            self.locks.release([Held(w.tx_id, w.revision)])

    def _record_failure(self, w: Work, text: str, *, retryable: bool) -> None:
        self.stats["failed"] += 1
        (res,) = self.recorder.execute([rules.RecordFailed(w.tx_id, w.revision, text, retryable)])
        if res.status is Status.REJECTED and isinstance(res.error, StaleLock | NotSubmittable):
            self.work.pop(w.tx_id, None)

    def _lease_lost(self) -> None:
        """Every lock under the old lease may be someone else's now: drop all work, take a new lease."""
        if self.work:
            log.warning("lock lease lost; dropping %d claim(s)", len(self.work))
        self.work.clear()
        self.locks.renew()

    def _fail_at(self, point: str) -> None:
        """Test failpoint: SIGKILL ourselves at a step boundary (``--crash-at`` / $TVOTE_SUBMITTER_CRASH)."""
        if self.failpoint == point:
            log.warning("failpoint %s: SIGKILL", point)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)


def _max_fees(fees: list[Fees]) -> Fees | None:
    if not fees:
        return None
    return Fees(max(f.max_fee_per_gas for f in fees), max(f.max_priority_fee_per_gas for f in fees))
