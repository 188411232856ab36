"""Bounded restart time: a reader restored from its snapshot ends exactly where one that folded everything does.

And a snapshot that is not the reader's own (another signature) or not this log's (another hash at its
position), or that cannot be read, is refused: the reader folds from position 0 instead.
"""

from __future__ import annotations

from dataclasses import replace

from helpers import OPERATOR, admin, trustees

from events import rules, snapshot
from events.follow import Follower
from events.memory_store import MemoryStore
from events.store import snapshot_bytes
from recording.memory_guard import MemoryGuard
from recording.recorder import Recorder

TS = trustees(5)


def busy_log() -> tuple[MemoryStore, Recorder]:
    store = MemoryStore()
    Recorder(store, MemoryGuard("op"), OPERATOR).execute(admin(TS, 3, deadline_ms=100))
    node = Recorder(store, MemoryGuard("n"), TS[0].signer, retain_final=3)
    for k in range(12):
        node.execute([t.receive(f"t{k}", 1 + (k % 2 and t is TS[3])) for t in TS[:4]])
        node.execute([rules.CheckDeadline(f"t{k}", 10**9)])
    return store, node


def test_a_restored_reader_ends_where_the_full_fold_ends():
    store, node = busy_log()
    at = node.save_snapshot()
    assert at == store.last_position()
    node.execute([t.receive("after", 4) for t in TS[:3]])  # the log moves on after the snapshot
    fresh = Recorder(store, MemoryGuard("n2"), TS[0].signer, retain_final=3)
    assert fresh.load_snapshot() == at and fresh.position == at
    fresh.catch_up()
    full = Follower(retain_final=3, loader=node.follower.loader)
    full.feed(store.read_all(limit=10**6))
    assert fresh.ledger.cluster == full.ledger.cluster and fresh.ledger.txs == full.ledger.txs
    assert fresh.versions == full.versions and fresh.follower.prev_hash == full.prev_hash
    (late,) = fresh.execute([TS[1].receive("t0", 2)])  # a late double vote on an evicted tx, after a restart
    assert any(e.TYPE == "NodeBanned" for e in late.events)


def test_a_snapshot_that_is_not_ours_or_not_this_logs_is_refused():
    store, node = busy_log()
    node.save_snapshot()
    (snap,) = store.snapshots(node.writer)
    other = Recorder(store, MemoryGuard("x"), TS[1].signer)  # another node: a snapshot it did not sign
    store.save_snapshot(replace(snap, owner=other.writer))
    assert other.load_snapshot() is None
    wrong = bytes(32)  # signed by us, but the log holds another hash there (another cluster's log, an edit)
    signed_wrong = replace(snap, hash=wrong, signature=TS[0].key.sign(
        Recorder.SNAPSHOT_DOMAIN + snapshot_bytes(node.writer, snap.position, wrong, snap.state)).signature)
    for bad in (signed_wrong, replace(snap, hash=wrong),  # unsigned over that hash
                replace(snap, state=b"not a snapshot")):  # a signature over other bytes
        store._snapshots[node.writer] = [bad]
        again = Recorder(store, MemoryGuard("y"), TS[0].signer)
        assert again.load_snapshot() is None and again.position == 0  # it folds from 0 instead
        again.catch_up()
        assert again.ledger.cluster == node.ledger.cluster


def test_a_snapshot_needs_a_settled_position():
    store, _ = busy_log()
    f = Follower()
    rows = store.read_all(limit=10**6)
    f.feed(rows[:-1])
    if f.waiting:
        try:
            snapshot.encode(f)
        except ValueError:
            return
        raise AssertionError("a snapshot with rows waiting for their signature was taken")
