"""One process per trustee across machines: a create-only etcd key ``<prefix>/instances/<node_id>``.

The local lock (``lock.py``) cannot see a second machine started with a copy of the key. This
claim can: the key is created only if absent, under a lease this process keeps alive, with
the value ``hostname:pid:start``. A second claimant is refused and told who holds it. A clean
close revokes the lease (the key goes at once); after a crash the key goes when the lease
expires (``ttl`` seconds), so a moved or restarted trustee waits at most that long.

What it is not: a fencing token. A process frozen longer than the TTL wakes up believing it
holds the claim until its next refresh tells it otherwise, and a signature cannot be fenced
after it left. So the signer asks ``check()`` before every signature, which refuses once the
lease may have lapsed (last confirmed refresh + TTL - margin), and a lost claim stays lost:
the node must restart and claim again, which fails while someone else holds it. The claim
makes an operator's mistake (two nodes for one trustee) fail loudly; the move procedure in
docs/signer.md (stop, export, import, start) is what makes a move safe.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence

import grpc
import pyetcd.exceptions
from pyetcd.client import Endpoint, MultiEndpointEtcd3Client

from events.errors import StoreUnavailable
from events.vote import check_node_id

from .errors import ClaimLost, InstanceClaimed
from .lock import Holder, describe

CLAIM_TTL = 10


def _endpoints(spec: str | Sequence[str]) -> list[Endpoint]:
    urls = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for url in urls:
        host, port = url.strip().removeprefix("http://").rsplit(":", 1)
        # retry a failed endpoint after 1 s, not pyetcd's default 300 s (as node.guard does)
        out.append(Endpoint(host, int(port), secure=False, time_retry=1.0))
    return out


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (pyetcd.exceptions.Etcd3Exception, grpc.RpcError, ValueError) as e:
        raise StoreUnavailable(f"etcd failed: {type(e).__name__}: {str(e)[:200]}") from e


def _retry(attempts: int, fn, *args, **kwargs):
    for i in range(attempts):
        try:
            return _call(fn, *args, **kwargs)
        except StoreUnavailable:
            if i == attempts - 1:
                raise
    raise AssertionError("unreachable")


class InstanceClaim:
    def __init__(self, client: MultiEndpointEtcd3Client, node_id: str, key: str, holder: Holder, lease, ttl: int,
                 valid_until: float) -> None:
        self.client = client
        self.node_id = node_id
        self.key = key
        self.holder = holder
        self.lease = lease
        self.ttl = ttl
        self._mutex = threading.Lock()
        self._valid_until = valid_until
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, name="instance-claim", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, endpoints: str | Sequence[str], prefix: str, node_id: str, *, ttl: int = CLAIM_TTL,
                holder: Holder | None = None, timeout: float = 5) -> InstanceClaim:
        """Create ``<prefix>/instances/<node_id>`` under a new lease, or raise InstanceClaimed naming the holder.

        ``endpoints``: one URL, several separated by commas, or a list (failover between them).
        etcd unreachable: StoreUnavailable (nothing claimed; the node must not start signing).
        """
        check_node_id(node_id)
        holder = holder or Holder.me()
        key = f"{prefix.rstrip('/')}/instances/{node_id}"
        eps = _endpoints(endpoints)
        client = MultiEndpointEtcd3Client(eps, timeout=timeout, failover=True)
        try:
            sent = time.monotonic()
            # pyetcd fails over only when asked again: one attempt per endpoint
            lease = _retry(len(eps), client.lease, ttl)
            t = client.transactions
            ok, responses = _retry(len(eps), client.transaction, compare=[t.create(key) == 0],
                                   success=[t.put(key, holder.text(), lease=lease)], failure=[t.get(key)])
            found = responses[0][0] if not ok and responses and responses[0] else None
            if found is not None and found[1].lease_id == lease.id:
                ok = True  # an attempt whose reply was lost had created it: the key is ours
            if not ok:
                with contextlib.suppress(Exception):
                    lease.revoke()
                text = found[0].decode(errors="replace") if found is not None else "?"
                raise InstanceClaimed(
                    f"trustee {node_id} is already running: {describe(text)} holds {key}. Only one process may "
                    "sign with a trustee key; stop it first (or, if it crashed, wait for its lease to expire)",
                    text,
                )
        except BaseException:
            client.close()
            raise
        return cls(client, node_id, key, holder, lease, ttl, sent + ttl)

    # liveness -----------------------------------------------------------------------------------

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self.refresh()

    def refresh(self) -> None:
        """Extend the lease and confirm the key is still ours; a lapse or a foreign key is final."""
        sent = time.monotonic()
        try:
            replies = self.lease.refresh()
            value, meta = self.client.get(self.key)
        except Exception:
            return  # etcd unreachable: the claim holds until the last confirmed refresh + TTL
        ttl = replies[-1].TTL if replies else 0
        with self._mutex:
            if ttl <= 0:
                self._lost = "its lease expired"
            elif value is None or meta.lease_id != self.lease.id:
                self._lost = f"the key was deleted or taken over (now {value!r})"
            else:
                self._valid_until = max(self._valid_until, sent + ttl)

    @property
    def lost(self) -> str | None:
        """Why the claim is lost for good (None: it holds, or only waits for etcd to confirm it again)."""
        with self._mutex:
            return self._lost

    def alive(self, margin: float = 1.0) -> bool:
        with self._mutex:
            return self._lost is None and time.monotonic() < self._valid_until - margin

    def check(self, margin: float = 1.0) -> None:
        """Raise ClaimLost unless the claim surely still holds (the signer calls this before signing)."""
        if not self.alive(margin):
            with self._mutex:
                why = self._lost or "no confirmed lease refresh within its TTL (etcd unreachable?)"
            raise ClaimLost(f"instance claim {self.key} lost: {why}; refusing to sign until the node restarts")

    def close(self) -> None:
        """Revoke the lease (the key goes with it) and stop; an unrevoked lease still expires on its own."""
        self._stop.set()
        with self._mutex:
            self._lost = self._lost or "closed"
        with contextlib.suppress(Exception):
            self.lease.revoke()
        self.client.close()

    def __enter__(self) -> InstanceClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
