"""A scripted scenario run against real services: the body of ``tvote up`` for now.

N trustees vote on a stream of transactions; every vote reaches every node, in its own
order (as gossip would deliver it), and each node records what it receives through the
real write path (decide -> etcd CAS -> Postgres). One trustee is Byzantine in a chosen way.
The trustees' processes and libp2p gossip arrive with the node issue; until then the nodes
here are in-process recorders sharing the one log, which is exactly what R13 describes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.signing

from events import rules
from events.store import EventStore
from events.vote import SignedVote, Vote, sign
from node.guard import EtcdGuard
from node.recorder import Recorder, Status, now_ms

BYZANTINE_MODES = ("double", "minority", "forge", "silent", "none")


@dataclass(frozen=True)
class Trustee:
    node_id: str
    key: nacl.signing.SigningKey
    peer_id: str

    def vote(self, tx_id: str, value: int) -> SignedVote:
        return sign(Vote(tx_id, value, self.node_id, now_ms()), self.key)


def make_trustees(n: int, seed: int = 7) -> list[Trustee]:
    rnd = random.Random(seed)
    return [
        Trustee(f"trustee-{i}", nacl.signing.SigningKey(rnd.randbytes(32)), f"peer-trustee-{i}")
        for i in range(1, n + 1)
    ]


@dataclass
class ScenarioResult:
    transactions: int = 0
    deliveries: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def votes_for(tx_index: int, tx_id: str, trustees: list[Trustee], byzantine: str) -> list[tuple[SignedVote, str]]:
    """(signed vote, author peer) pairs for one transaction: honest trustees vote the true value."""
    value = 1000 + tx_index
    bad = trustees[-1]
    out = [(t.vote(tx_id, value), t.peer_id) for t in trustees[:-1]]
    if byzantine == "none":
        out.append((bad.vote(tx_id, value), bad.peer_id))
    elif byzantine == "double" and tx_index % 3 == 0:
        out += [(bad.vote(tx_id, value), bad.peer_id), (bad.vote(tx_id, value + 1), bad.peer_id)]
    elif byzantine == "minority" and tx_index % 3 == 0:
        out.append((bad.vote(tx_id, value + 7), bad.peer_id))
    elif byzantine == "forge" and tx_index % 3 == 0:
        victim = trustees[0]
        forged = SignedVote(Vote(tx_id, value + 1, victim.node_id, now_ms()), bad.vote(tx_id, value + 1).signature)
        out.append((forged, bad.peer_id))
    elif byzantine == "silent":
        pass  # never votes: SILENT_FAILURE at each deadline, banned once below the reputation floor
    else:
        out.append((bad.vote(tx_id, value), bad.peer_id))
    return out


def bootstrap_cluster(rec: Recorder, trustees: list[Trustee], threshold: int, deadline_ms: int) -> None:
    cmds: list[rules.Command] = [
        rules.AdmitMember(t.node_id, bytes(t.key.verify_key), t.peer_id, "tvote-up") for t in trustees
    ]
    rec.execute(cmds)
    rec.execute([rules.Configure(threshold, "tvote-up", deadline_ms=deadline_ms)])


def run_scenario(
    store_factory: Callable[[], EventStore],
    etcd_endpoint: str,
    etcd_prefix: str,
    n: int,
    threshold: int,
    transactions: int,
    byzantine: str,
    nodes: int = 3,
    deadline_ms: int = 1500,
    seed: int = 7,
    progress: Callable[[int, ScenarioResult], None] | None = None,
) -> ScenarioResult:
    import time

    rnd = random.Random(seed)
    trustees = make_trustees(n, seed)
    recorders = [
        Recorder(store_factory(), EtcdGuard(etcd_endpoint, etcd_prefix, f"node-{i}"), f"node-{i}")
        for i in range(1, nodes + 1)
    ]
    result = ScenarioResult()
    t0 = time.perf_counter()
    try:
        bootstrap_cluster(recorders[0], trustees, threshold, deadline_ms)
        tx_ids = []
        for k in range(transactions):
            tx_id = f"tx_{k:04d}"
            tx_ids.append(tx_id)
            votes = votes_for(k, tx_id, trustees, byzantine)
            for rec in recorders:  # every node receives every vote, each in its own order
                mine = votes[:]
                rnd.shuffle(mine)
                now = now_ms()
                for status in _record(rec, [rules.ReceiveVote(v, peer, now) for v, peer in mine]):
                    result.outcomes[status] = result.outcomes.get(status, 0) + 1
                result.deliveries += len(mine)
            result.transactions += 1
            if progress:
                progress(k + 1, result)
        for rec in recorders:
            rec.retry_deferred()
        time.sleep(deadline_ms / 1000)  # let every deadline pass, then every node ticks (R9 fires once)
        for rec in recorders:
            _record(rec, [rules.CheckDeadline(tx, now_ms()) for tx in tx_ids])
        final = recorders[0]
        final.catch_up()
        for tx in tx_ids:
            st = final.ledger.txs[tx].status
            result.statuses[st] = result.statuses.get(st, 0) + 1
    finally:
        for rec in recorders:
            if rec.guard:
                rec.guard.close()
            close = getattr(rec.store, "close", None)
            if close:
                close()
    result.seconds = time.perf_counter() - t0
    return result


def _record(rec: Recorder, cmds: list[rules.Command]) -> list[str]:
    out = []
    for r in rec.execute(cmds):
        if r.status is Status.REJECTED and r.error is not None:
            out.append(f"dropped:{type(r.error).__name__}")
        else:
            out.append(r.status.value)
    return out
