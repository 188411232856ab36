"""The guard port on etcd (R13): stream heads by compare-and-swap, vote claims, counters.

The seed's key layout: ``/streams/<id>/head`` (the version a decision read), ``/votes/<tx>/<node>``
(the vote claim), ``/vote_counts/<tx>/<value>`` and ``/transaction_status/<tx>`` (fast-path
counters). What the port promises is in ``recording.guard``.

Crash analysis (etcd first, Postgres second):

- crash after the etcd CAS, before the PG commit: the head is *ahead* of PG. Each head
  write also puts ``/streams/<id>/writer`` under the writer's lease; once that lease has
  expired (the writer is gone) a reader resets the head to PG's version. A writer that
  merely failed its PG append resets the head itself at once.
- a vote key claimed by a node that then died: vote keys live under the claimer's lease,
  so the claim vanishes with its claimer and the next node to receive the vote claims and
  appends it (the idempotency key keeps it single). A node that finds its *own* stale claim
  (its append failed) clears it by CAS and retries.

Bounded key space (running for months): claims and writer marks are only needed until the append
they guard is in Postgres, yet a live writer's lease never lapses, so etcd would keep one vote key
per vote and one writer mark per transaction for as long as the node runs (bench/soak_bench.py:
etcd's database grew 3.2 MB per 1,000 transactions, so its 2 GiB quota would refuse every write
after ~640,000 of them, 3.5 hours at 50 tx/s). So claims go under a lease that is replaced every
``rotate_s`` (30 s): the keep-alive stops refreshing the old one, which lapses ``lease_ttl`` later
and takes its keys with it. Short, because etcd deletes a lapsed lease's keys in one step and
serves nothing meanwhile (1.5 s for 200,000 keys; with 5-minute leases at 240 tx/s the soak's
client timed out just after the first rotation). A claim whose append is still in flight when its
lease lapses is what a claimer crash leaves behind: the vote may be claimed again and the
idempotency key keeps it single; a lapsed writer mark lets a reader repair a head from Postgres,
which only ever moves it to the truth. A claim under our previous lease is still ours
(``Refusal.votes``), so we may release it. Heads and counters go under the same lease (not the seed's
24 h: at 50 tx/s a day of them is three times etcd's quota, docs/decisions.md): a claim that finds a
head missing is refused and the recorder repairs it from Postgres, one round trip more.
- etcd lost or restored from an old snapshot (heads *behind* or missing): repaired
  forward from PG on the first conflict.
"""

from __future__ import annotations

import contextlib
import threading
import time

import grpc
import pyetcd.exceptions
from pyetcd.client import Endpoint, MultiEndpointEtcd3Client

from events.errors import StoreUnavailable
from recording.guard import Claim, Refusal

LEASE_TTL = 10
ROTATE_S = 30.0  # claims move to a fresh lease this often; the old one lapses with the keys of appended votes


class EtcdGuard:
    """The guard on an etcd cluster (``recording.guard.Guard``)."""

    def __init__(self, endpoint: str, prefix: str, node_id: str, lease_ttl: int = LEASE_TTL,
                 rotate_s: float = ROTATE_S) -> None:
        """``endpoint``: one etcd client URL, or several separated by commas (failover between them)."""
        endpoints = []
        for url in endpoint.split(","):
            host, port = url.strip().removeprefix("http://").rsplit(":", 1)
            # A failed endpoint is retried after 1 s, not pyetcd's default 300 s: with one endpoint
            # the default turns a blip into five minutes of "Trying to use a failed node".
            endpoints.append(Endpoint(host, int(port), secure=False, time_retry=1.0))
        self.client = MultiEndpointEtcd3Client(endpoints, timeout=5, failover=True)
        self.prefix = prefix.rstrip("/")
        self.node_id = node_id
        self._lease_ttl = lease_ttl
        self._rotate_s = rotate_s
        self.lease = self._call(self.client.lease, lease_ttl)
        self._lease_at = time.monotonic()
        self._previous_lease_id: int | None = None  # the lease before the last rotation, lapsing
        self._stop = threading.Event()
        self._keepalive = threading.Thread(target=self._keep_alive, args=(lease_ttl,), daemon=True)
        self._keepalive.start()

    def _keep_alive(self, ttl: int) -> None:
        while not self._stop.wait(min(ttl / 3, self._rotate_s)):
            try:
                if time.monotonic() - self._lease_at >= self._rotate_s:
                    self._rotate()
                responses = self.lease.refresh()
                if responses and responses[0].TTL <= 0:
                    self._renew_lease()  # it lapsed (we were frozen or cut off longer than the TTL)
            except Exception:
                continue  # etcd unavailable: the next refresh retries

    def _renew_lease(self) -> None:
        """A new lease after ours lapsed; our old claims died with it, which is what claims are for."""
        self.lease = self.client.lease(self._lease_ttl)
        self._lease_at = time.monotonic()

    def _rotate(self) -> None:
        """New claims go under a fresh lease; the old one is no longer refreshed and lapses in ``lease_ttl``."""
        old = self.lease
        self.lease = self.client.lease(self._lease_ttl)
        self._previous_lease_id = old.id
        self._lease_at = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):  # best effort: an unrevoked lease simply expires
            self.lease.revoke()
        self.client.close()

    # key layout --------------------------------------------------------------------------------

    def head_key(self, stream: str) -> str:
        return f"{self.prefix}/streams/{stream}/head"

    def writer_key(self, stream: str) -> str:
        return f"{self.prefix}/streams/{stream}/writer"

    def vote_key(self, suffix: str) -> str:
        return f"{self.prefix}/votes/{suffix}"

    def key(self, suffix: str) -> str:
        return f"{self.prefix}/{suffix}"

    # the CAS ----------------------------------------------------------------------------------

    def claim(self, claims: list[Claim]) -> Refusal | None:
        """One etcd transaction for the whole batch: None when granted, else why not."""
        t = self.client.transactions
        keep = self.lease  # heads and counters lapse as claims do (see the module's "Bounded key space")
        compare, success, failure = [], [], []
        heads = sorted({s for c in claims for s in c.expected})
        start = {}
        for c in claims:  # a later claim in the batch may build on an earlier one's heads
            for s, v in c.expected.items():
                start.setdefault(s, v)
        end = dict(start)
        for c in claims:
            for s, n in c.written.items():
                end[s] = end[s] + n
        for s in heads:
            v = start[s]
            compare.append(t.create(self.head_key(s)) == 0 if v == 0 else t.value(self.head_key(s)) == str(v))
            failure.append(t.get(self.head_key(s)))
            failure.append(t.get(self.writer_key(s)))
        votes = [(k, v) for c in claims for k, v in c.votes.items()]
        for k, _ in votes:
            compare.append(t.create(self.vote_key(k)) == 0)
            failure.append(t.get(self.vote_key(k)))
        for s in heads:
            if end[s] != start[s]:
                success.append(t.put(self.head_key(s), str(end[s]), lease=keep))
                success.append(t.put(self.writer_key(s), f"{end[s]}:{self.node_id}", lease=self.lease))
        for k, v in votes:
            success.append(t.put(self.vote_key(k), v, lease=self.lease))
        counters: dict[str, str] = {}
        for c in claims:
            counters.update(c.counters)
        for k, v in counters.items():
            success.append(t.put(self.key(k), v, lease=keep))
        ok, responses = self._txn(compare, success, failure)
        if ok:
            return None
        refusal = Refusal({}, {}, {})
        i = 0
        for s in heads:
            head, writer = responses[i], responses[i + 1]
            i += 2
            refusal.heads[s] = int(head[0][0]) if head else None
            refusal.writers_alive[s] = bool(writer)
            refusal.head_writers[s] = writer[0][0].decode().split(":", 1)[1] if writer else None
        for k, _ in votes:
            got = responses[i]
            i += 1
            if got:
                value, meta = got[0]
                ours = meta.lease_id in (self.lease.id, self._previous_lease_id)
                refusal.votes[k] = (value.decode(), meta.mod_revision, ours)
        return refusal

    def repair_head(self, stream: str, seen: int | None, truth: int) -> bool:
        """Set a head to PG's version, if it still holds what we saw (CAS: never clobber a live move)."""
        t = self.client.transactions
        cmp = t.create(self.head_key(stream)) == 0 if seen is None else t.value(self.head_key(stream)) == str(seen)
        # version 0 is "no head key" (the claim compares create_revision == 0), never "0"
        head = self.head_key(stream)
        op = t.delete(head) if truth == 0 else t.put(head, str(truth), lease=self.lease)
        ok, _ = self._txn([cmp], [op], [])
        return ok

    def release_vote(self, suffix: str, seen_mod_revision: int) -> bool:
        """Drop our own stale claim on a vote (our append of it failed), if nobody moved it since."""
        t = self.client.transactions
        ok, _ = self._txn([t.mod(self.vote_key(suffix)) == seen_mod_revision], [t.delete(self.vote_key(suffix))], [])
        return ok

    def head(self, stream: str) -> int | None:
        value, _ = self._call(self.client.get, self.head_key(stream))
        return int(value) if value is not None else None

    def head_writer(self, stream: str) -> str | None:
        value, _ = self._call(self.client.get, self.writer_key(stream))
        return value.decode().split(":", 1)[1] if value is not None else None

    def get(self, suffix: str) -> str | None:
        value, _ = self._call(self.client.get, self.key(suffix))
        return value.decode() if value is not None else None

    def _txn(self, compare, success, failure):
        return self._call(self.client.transaction, compare=compare, success=success, failure=failure)

    def _call(self, fn, *args, **kwargs):
        """Every etcd failure is a StoreUnavailable (retried by the caller), never a crash of its thread."""
        try:
            return fn(*args, **kwargs)
        except (pyetcd.exceptions.Etcd3Exception, grpc.RpcError, ValueError) as e:
            text = str(e)
            if "lease not found" in text:
                with contextlib.suppress(Exception):
                    self._renew_lease()
            raise StoreUnavailable(f"etcd failed: {type(e).__name__}: {text[:200]}") from e

