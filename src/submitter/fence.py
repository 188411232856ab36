"""etcd side of the submitter: per-transaction lease locks (the fencing token) and nonce reservations.

Locks. ``<prefix>/locks/submission/<tx_id>`` is created under the submitter's own lease (30 s TTL by
default, kept alive by a thread). The key's etcd ``create_revision`` is the fencing token: it is
recorded in SubmissionStarted and named by every later command, and the decider refuses any command
whose revision is not the current claim (``StaleLock``). etcd revisions only grow, so whoever takes
the lock after our lease expired gets a larger revision, supersedes our claim in the log, and from
then on every append of ours is refused: a paused holder that wakes up cannot act (an etcd lock alone
is not safe, the log's check is what makes it so). Many keys are taken in one etcd request (nested
transactions), so a batch of consensus transactions costs one round trip.

Nonces. Two submitters (possibly sharing one key) must never sign the same nonce for two different
transactions: the per-transaction lock does not serialise that. Reservations are therefore made by
compare-and-swap in one etcd transaction:

- ``<prefix>/nonces/<chain>/<sender>/next``: the next nonce to hand out (CAS on its mod revision);
- ``<prefix>/nonces/<chain>/<sender>/n/<nonce>`` -> tx_id, created only if absent (a nonce belongs to
  one transaction forever, whatever races);
- ``<prefix>/nonces/<chain>/<sender>/tx/<tx_id>`` -> nonce, the transaction's current reservation.

The keys are persistent, not lease-bound: a reservation must outlive its reserver, because a nonce
handed out and then abandoned would leave a gap that blocks every later transaction of the sender on
chain. Instead the *transaction* keeps its reservation: whoever takes the transaction over (after a
crash, between reserving and logging SubmissionSigned) reuses it, so the gap is filled by the same
transaction. A reservation below the chain's mined nonce was consumed by something else and is
replaced. The first candidate is ``max(next, floor)`` where the caller's floor is the chain's pending
nonce and one past the highest nonce the log records as signed for this sender, so a lost or restored
etcd cannot hand out a nonce the log or the chain already used.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass

import grpc
import pyetcd
import pyetcd.exceptions

from events.errors import StoreUnavailable

log = logging.getLogger(__name__)

LOCK_TTL = 30
MAX_CAS_ATTEMPTS = 64


class LeaseGone(StoreUnavailable):
    """etcd no longer knows our lease (it expired or was revoked): every lock under it is lost."""


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (pyetcd.exceptions.Etcd3Exception, grpc.RpcError) as e:
        # pyetcd passes some gRPC statuses through untranslated (e.g. NOT_FOUND for a lease)
        if "lease not found" in str(e):
            raise LeaseGone(f"etcd: {e}") from e
        raise StoreUnavailable(f"etcd failed: {e}") from e


@dataclass(frozen=True)
class Held:
    """A lock we hold: its fencing token and the mod revision needed to release it by CAS."""

    tx_id: str
    revision: int


class SubmissionLocks:
    """Lease-bound locks ``/locks/submission/<tx>`` whose create revision is the fencing token."""

    def __init__(self, client: pyetcd.client, prefix: str, owner: str, ttl: int = LOCK_TTL) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.owner = owner
        self.ttl = ttl
        self._mutex = threading.Lock()
        self.lease = _call(client.lease, ttl)
        self._valid_until = time.monotonic() + ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, name="submission-lease", daemon=True)
        self._thread.start()

    def key(self, tx_id: str) -> str:
        return f"{self.prefix}/locks/submission/{tx_id}"

    # lease ------------------------------------------------------------------------------------------

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self.refresh()

    def refresh(self) -> None:
        lease = self.lease
        try:
            replies = lease.refresh()
        except Exception:  # etcd unreachable: our locks are only as good as the last refresh
            return
        ttl = replies[-1].TTL if replies else 0
        with self._mutex:
            if lease is self.lease:
                # A TTL of 0 means etcd no longer knows the lease: every lock under it is gone.
                self._valid_until = time.monotonic() + ttl if ttl > 0 else 0.0

    def alive(self, margin: float = 1.0) -> bool:
        """True while the lease surely still holds (last successful refresh + TTL, minus a margin).

        Safety does not rest on this (the log's fencing check does); it only stops us from working
        on locks that someone else may already have taken over.
        """
        with self._mutex:
            return time.monotonic() < self._valid_until - margin

    def renew(self) -> None:
        """Our lease is gone: take a fresh one (the caller has dropped every claim made under the old)."""
        lease = _call(self.client.lease, self.ttl)
        with self._mutex:
            old, self.lease = self.lease, lease
            self._valid_until = time.monotonic() + self.ttl
        with contextlib.suppress(Exception):
            old.revoke()

    def close(self, revoke: bool = True) -> None:
        self._stop.set()
        if revoke:
            with contextlib.suppress(Exception):  # an unrevoked lease simply expires
                self.lease.revoke()

    # locks ------------------------------------------------------------------------------------------

    def acquire(self, tx_ids: list[str]) -> dict[str, int]:
        """Try to take each lock; returns tx_id -> fencing revision for the ones we now hold.

        One etcd request: a nested transaction per key creates it under our lease if absent and
        reads it back (its create revision is the token). A key already held under our own lease
        (we took it earlier) is ours too; one held by anyone else is skipped.
        """
        if not tx_ids:
            return {}
        t = self.client.transactions
        lease_id = self.lease.id
        ops = []
        for tx_id in tx_ids:
            k = self.key(tx_id)
            ops.append(t.txn(compare=[t.create(k) == 0], success=[t.put(k, self.owner, lease=self.lease), t.get(k)],
                             failure=[t.get(k)]))
        try:
            _, responses = _call(self.client.transaction, compare=[], success=ops, failure=[])
        except LeaseGone:
            with self._mutex:
                if self.lease.id == lease_id:
                    self._valid_until = 0.0  # the next round sees alive() False and takes a new lease
            return {}
        held: dict[str, int] = {}
        for tx_id, resp in zip(tx_ids, responses, strict=True):
            inner = resp.response_txn
            kvs = inner.responses[-1].response_range.kvs
            if not kvs:
                continue
            kv = kvs[0]
            if inner.succeeded or kv.lease == lease_id:
                held[tx_id] = kv.create_revision
        return held

    def release(self, held: list[Held]) -> None:
        """Delete our locks if they are still the ones we created (CAS on the create revision)."""
        if not held:
            return
        t = self.client.transactions
        ops = [t.txn(compare=[t.create(self.key(h.tx_id)) == h.revision], success=[t.delete(self.key(h.tx_id))],
                     failure=[]) for h in held]
        with contextlib.suppress(StoreUnavailable):  # an unreleased lock expires with the lease
            _call(self.client.transaction, compare=[], success=ops, failure=[])


class NonceBook:
    """Nonce reservations per (chain, sender) by etcd compare-and-swap; see the module docstring."""

    def __init__(self, client: pyetcd.client, prefix: str, chain_id: int, sender: str) -> None:
        self.client = client
        self.base = f"{prefix.rstrip('/')}/nonces/{chain_id}/{sender.lower()}"
        self._cache: tuple[int, int] | None = None  # (next, its mod revision) after our last reservation

    def _next_key(self) -> str:
        return f"{self.base}/next"

    def _nonce_key(self, nonce: int) -> str:
        return f"{self.base}/n/{nonce:020d}"

    def _tx_key(self, tx_id: str) -> str:
        return f"{self.base}/tx/{tx_id}"

    def owner_of(self, nonce: int) -> str | None:
        value, _ = _call(self.client.get, self._nonce_key(nonce))
        return value.decode() if value is not None else None

    def reserve(self, tx_ids: list[str], floor: int, mined: int, fresh: frozenset[str] = frozenset()) -> dict[str, int]:
        """A nonce for each transaction: its earlier reservation if still unconsumed, else a new one.

        ``floor``: the lowest nonce a new reservation may take (chain pending nonce, and one past the
        log's highest signed nonce). ``mined``: the chain's mined nonce; a reservation below it was
        consumed by another transaction and is replaced. New nonces are contiguous from
        ``max(next, floor)`` and are handed out in the order of ``tx_ids``. ``fresh`` names
        transactions claimed for the first time (they cannot hold a reservation): when every one is
        fresh and we made the last reservation, one CAS on the cached ``next`` does it (no reads).
        """
        out: dict[str, int] = {}
        t = self.client.transactions
        cached = self._cache if set(tx_ids) <= fresh else None
        for _ in range(MAX_CAS_ATTEMPTS):
            todo = [x for x in tx_ids if x not in out]
            if cached is not None:
                next_value, next_mod = cached
                fresh_todo = [(x, 0) for x in todo]
                cached = None  # only one optimistic try
            else:
                reads = [t.get(self._next_key())] + [t.get(self._tx_key(x)) for x in todo]
                _, got = _call(self.client.transaction, compare=[], success=reads, failure=[])
                nxt = got[0]
                next_value = int(nxt[0][0]) if nxt else 0
                next_mod = nxt[0][1].mod_revision if nxt else 0
                fresh_todo = []  # (tx_id, mod revision of its tx key; 0 if absent)
                for tx_id, r in zip(todo, got[1:], strict=True):
                    if r and int(r[0][0]) >= mined:
                        out[tx_id] = int(r[0][0])  # ours already, and not consumed on chain
                    else:
                        fresh_todo.append((tx_id, r[0][1].mod_revision if r else 0))
                if not fresh_todo:
                    return out
            start = max(next_value, floor)
            compare = [t.mod(self._next_key()) == next_mod]
            success = [t.put(self._next_key(), str(start + len(fresh_todo)))]
            for i, (tx_id, tx_mod) in enumerate(fresh_todo):
                n = start + i
                compare.append(t.create(self._nonce_key(n)) == 0)
                compare.append(t.mod(self._tx_key(tx_id)) == tx_mod)
                success.append(t.put(self._nonce_key(n), tx_id))
                success.append(t.put(self._tx_key(tx_id), str(n)))
            ok, responses = _call(self.client.transaction, compare=compare, success=success, failure=[])
            if ok:
                for i, (tx_id, _) in enumerate(fresh_todo):
                    out[tx_id] = start + i
                self._cache = (start + len(fresh_todo), responses[0].response_put.header.revision)
                return out
            self._cache = None
            # Someone moved `next`, or a nonce key exists above it (etcd restored from an old
            # snapshot): skip past what is taken and try again.
            if self.owner_of(start) is not None:
                floor = max(floor, start + 1)
        raise StoreUnavailable(f"could not reserve nonces after {MAX_CAS_ATTEMPTS} attempts (heavy contention)")
