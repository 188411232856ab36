"""R13 at the follower (events/follow.py): what every honest reader applies, voids, and blames.

On the in-memory store; the same follower reads the Postgres log in every integration test.
"""

from __future__ import annotations

from dataclasses import replace

from helpers import OPERATOR, W, Writers, admin, signer, trustees

from events import rules
from events.commands import to_json
from events.follow import Follower
from events.memory_store import MemoryStore
from events.model import NodeBanned
from events.store import NewEvent, Unit
from recording.memory_guard import MemoryGuard
from recording.recorder import Recorder, Status

TS = trustees(4)


def founded() -> tuple[MemoryStore, Recorder]:
    store = MemoryStore()
    op = Recorder(store, MemoryGuard("op"), OPERATOR)
    assert all(r.status is Status.APPENDED for r in op.execute(admin(TS, 3)))
    node = Recorder(store, MemoryGuard("n1"), TS[0].signer)
    node.execute([t.receive("tx", 7) for t in TS[:3]])
    return store, node


def follow(rows) -> tuple[Follower, list]:
    f = Follower()
    return f, f.feed(rows)


def test_an_honest_log_is_applied_whole_and_matches_the_writers_own_state():
    store, node = founded()
    f, settled = follow(store.read_all(limit=1000))
    assert all(s.event is not None for s in settled) and f.position == store.last_position()
    assert f.ledger.txs["tx"].status == rules.THRESHOLD_REACHED
    assert f.ledger.cluster == node.ledger.cluster and f.ledger.txs == dict(node.ledger.txs)


def test_a_row_no_writer_signature_covers_is_void_and_blames_nobody():
    store, _ = founded()
    ban = NodeBanned("node-1", TS[0].peer_id, "DOUBLE_VOTING", "made-up")
    store.append([Unit.of({"cluster": store.stream_versions(["cluster"])["cluster"]}, [ban],
                          {"type": "Unban", "node_id": "x", "operator": "op", "reason": "r"})], W)  # unknown writer
    f, settled = follow(store.read_all(limit=1000))
    (void,) = [s.void for s in settled if s.void]
    assert not void.attributable and "not a writer the log admitted" in void.reason
    assert not f.ledger.cluster.members["node-1"].banned and not f.ledger.cluster.faults


def test_a_writers_false_decision_is_void_and_kept_for_a_report_that_bans_it():
    store, _ = founded()
    # node-2 signs a ban of node-1 with no violation behind it: entitled to record, but not that decision
    cmd = rules.ReceiveVote(TS[0].vote("tx2", 1), TS[0].peer_id, 5)
    ban = NodeBanned("node-1", TS[0].peer_id, "DOUBLE_VOTING", "made-up")
    store.append([Unit.of({"cluster": store.stream_versions(["cluster"])["cluster"], "tx:tx2": 0}, [ban],
                          to_json(cmd) | {"vote": None})], TS[1].signer)
    f, settled = follow(store.read_all(limit=1000))
    (void,) = [s.void for s in settled if s.void]
    assert void.attributable and void.writer == "node-2"
    assert f.ledger.cluster.faults == {void.position: rules.Fault("node-2", void.reason)}
    # a trustee reports it: node-2 is banned for an invalid entry, and every follower agrees
    node3 = Recorder(store, MemoryGuard("n3"), TS[2].signer)
    (r,) = node3.execute([rules.ReportInvalidEntry(void.position, "node-2", void.reason)])
    assert [e.TYPE for e in r.events] == ["InvalidEntryReported", "NodeBanned", "ReputationChanged"], r
    f2, settled2 = follow(store.read_all(limit=1000))
    assert f2.ledger.cluster.members["node-2"].banned and not f2.ledger.cluster.faults
    assert [s.void.position for s in settled2 if s.void] == [void.position]
    # a report of something that is not a fault is itself refused
    (bad,) = node3.execute([rules.ReportInvalidEntry(2, "op", "made up")])
    assert bad.status is Status.REJECTED


def test_an_entry_its_writer_may_not_write_is_void():
    store, _ = founded()
    rogue = Recorder(store, MemoryGuard("x"), signer("operator:mallory"))  # never admitted
    node = Recorder(store, MemoryGuard("n1"), TS[0].signer)
    (r,) = node.execute([rules.Configure(1, "op")])  # a trustee is no operator: refused before anything is written
    assert r.status is Status.REJECTED and type(r.error).__name__ == "NotEntitled"
    (r,) = rogue.execute([rules.Configure(1, "mallory")])
    assert r.status is Status.REJECTED


def test_an_edited_row_voids_its_unit_and_blames_no_honest_writer_after_it():
    store, _ = founded()
    rows = store.read_all(limit=1000)
    first_vote = next(i for i, r in enumerate(rows) if r.event_type == "VoteAccepted")
    edited = replace(rows[first_vote], payload={**rows[first_vote].payload, "value": 8})
    f, settled = follow([*rows[:first_vote], edited, *rows[first_vote + 1:]])
    voids = [s.void for s in settled if s.void]
    assert voids and all(not v.attributable for v in voids)  # the edit, and what rested on it: nobody's fault
    assert any("edited after it was written" in v.reason for v in voids)
    assert not f.ledger.cluster.faults and "tx:tx" in f.tainted


def test_rows_wait_for_their_batch_signature_and_a_gap_is_named():
    store, _ = founded()
    rows = store.read_all(limit=1000)
    f = Follower()
    settled = f.feed(rows[:-1])  # the last batch is cut before its signed row
    assert f.waiting >= 1 and f.position < rows[-2].position
    assert f.feed(rows[-1:]) and f.waiting == 0 and f.position == rows[-1].position
    g, _ = follow([r for r in rows if r.position != 3])
    assert any("missing rows" in a.problem for a in g.anomalies) and g.broken
    assert settled is not None


def test_the_genesis_operator_signs_the_batch_that_admits_it():
    store = MemoryStore()
    Recorder(store, MemoryGuard("op"), OPERATOR).execute(admin(TS, 3))
    f, settled = follow(store.read_all(limit=1000))
    assert all(s.event is not None for s in settled)
    assert OPERATOR.writer in f.ledger.cluster.writers


def test_a_second_self_admitted_operator_is_void():
    store = MemoryStore()
    Recorder(store, MemoryGuard("op"), OPERATOR).execute(admin(TS, 3))
    other = signer("operator:eve")
    store.append([Unit((lambda c: {"cluster": c})(store.stream_versions(["cluster"])["cluster"]), (
        NewEvent("cluster", "WriterAdmitted", 1, {"writer": "operator:eve", "role": "operator",
                                                  "public_key": other.public_key.hex(), "operator": "eve", "seq": 0},
                 "writer:operator:eve:0",
                 command=b'{"operator":"eve","public_key":"%s","role":"operator","type":"AdmitWriter",'
                         b'"writer":"operator:eve"}' % other.public_key.hex().encode()),))], other)
    f, settled = follow(store.read_all(limit=1000))
    assert "operator:eve" not in f.ledger.cluster.writers
    assert [s.void.reason for s in settled if s.void] == ["'operator:eve' is not a writer the log admitted"]


def test_writers_routes_every_command_to_an_entitled_writer():
    w = Writers(MemoryStore())
    w.execute(admin(TS, 3)[1:])
    assert w.execute([TS[0].receive("t", 1)])[0].status is Status.APPENDED


def test_a_row_signed_with_another_key_under_an_admitted_name_is_void():
    """Bad input: an event row with a bad writer signature is refused, nothing applied, nobody blamed."""
    store, _ = founded()
    impostor = signer("node-2")  # node-2's name, not node-2's key
    cmd = rules.ReceiveVote(TS[1].vote("tx9", 1), TS[1].peer_id, 5)
    events = rules.decide(rules.State(cluster=founded_cluster(store)), cmd)
    store.append([Unit.of({"cluster": store.stream_versions(["cluster"])["cluster"], "tx:tx9": 0}, events,
                          to_json(cmd))], impostor)
    f, settled = follow(store.read_all(limit=1000))
    voids = [s.void for s in settled if s.void]
    assert voids and all(not v.attributable and v.reason == "the signature is not node-2's" for v in voids)
    assert "tx9" not in f.ledger.txs and not f.ledger.cluster.faults


def founded_cluster(store: MemoryStore) -> rules.Cluster:
    f = Follower()
    f.feed(store.read_all(limit=1000))
    return f.ledger.cluster


def busy_log() -> MemoryStore:
    """A log several trustees wrote: votes, a threshold, a late vote, deadlines with silence, a double vote and
    its ban (a change to the cluster state that later decisions read)."""
    store, node1 = founded()  # node-1 recorded tx's three votes (the last with its threshold)
    node2 = Recorder(store, MemoryGuard("n2"), TS[1].signer)
    node3 = Recorder(store, MemoryGuard("n3"), TS[2].signer)
    node2.execute([TS[3].receive("tx", 7)])  # the late fourth vote, by another writer
    node3.execute([t.receive("tx2", 5) for t in TS[:3]])
    node2.execute([rules.CheckDeadline("tx", 10**9), rules.CheckDeadline("tx2", 10**9)])  # tx2: node-4 silent
    node3.execute([TS[3].receive("tx3", 1), TS[3].receive("tx3", 2, ts=2)])  # node-4 votes twice: banned
    node1.execute([t.receive("tx4", 3) for t in TS[:3]])
    node2.execute([TS[3].receive("tx4", 3)])
    return store


def edits(r):
    """What a superuser can change in a stored row (each column the writer's signature covers), and deleting it."""
    yield replace(r, payload={**r.payload, "edited": True})
    yield replace(r, writer="node-4" if r.writer != "node-4" else "node-1")
    yield replace(r, stream_id="tx:elsewhere" if r.stream_id != "tx:elsewhere" else "cluster")
    yield replace(r, stream_id="cluster" if r.stream_id != "cluster" else "tx:tx")
    yield replace(r, event_type="VoteAccepted" if r.event_type != "VoteAccepted" else "DeadlinePassed")
    yield replace(r, idempotency_key=r.idempotency_key + "x", recorded_at_us=r.recorded_at_us + 1)
    if r.command:
        yield replace(r, command={**r.command, "now_ms": 5})
    yield None  # deleted


def test_after_an_edit_or_a_lost_row_every_follower_folds_alike_the_writers_included():
    """R14: after any edit of any row (any column) or a deleted row, every follower holds the same view and
    nobody is blamed, the writers of the rows included. Each of these got an honest writer reported before (the
    first in CI, the others here): a writer trusted its own rows on the edited log (its view kept what the
    others void); a silence charged on an edited transaction moved a reputation that a later ban on another
    stream read; an edited writer name or stream escaped the doubt of the edited stream; and a follower
    crashed applying its own row."""
    rows = busy_log().read_all(limit=1000)
    for i in range(len(rows)):
        for edited in edits(rows[i]):
            log = [*rows[:i], *([edited] if edited else []), *rows[i + 1:]]
            views = []
            for me in (None, *(t.node_id for t in TS)):
                f = Follower(me=me)
                settled = f.feed(log)
                assert not any(s.void.attributable for s in settled if s.void), (i, edited, me)
                assert not f.ledger.cluster.faults, (i, edited, me)
                views.append((f.ledger.cluster, dict(f.ledger.txs)))
            assert all(v == views[0] for v in views), (i, edited)


def test_the_ci_incident_a_superuser_edit_then_a_restart_gets_no_honest_writer_reported():
    """Replayed from a CI run: node-4 recorded tx's votes, a superuser edited node-2's, every node restarted.
    node-4 kept its own threshold row that the others void, charged node-2 silent at the deadline (void for
    the others: an edited stream), took the penalty into its view, and then decided the next deadline's
    participation reward on it: an untainted stream, so the others found a fault and reported node-4."""
    store = MemoryStore()
    Recorder(store, MemoryGuard("op"), OPERATOR).execute(admin(TS, 3))
    Recorder(store, MemoryGuard("n4"), TS[3].signer).execute([t.receive("tx", 1) for t in TS])
    i = next(i for i, r in enumerate(store._rows) if r.event_type == "VoteAccepted"
             and r.payload["vote"]["node_id"] == "node-2")
    store._rows[i] = replace(store._rows[i], payload={**store._rows[i].payload, "value": 9})  # as superuser
    nodes = [Recorder(store, MemoryGuard(f"r{k}"), t.signer) for k, t in enumerate(TS)]  # every node restarted
    for n in nodes:
        n.catch_up()
    nodes[3].execute([rules.CheckDeadline("tx", 10**13)])
    nodes[0].execute([t.receive("later", 2, now=2000) for t in TS])
    nodes[3].execute([rules.CheckDeadline("later", 10**13)])
    views = []
    for me in (None, *(t.node_id for t in TS)):
        f = Follower(me=me)
        settled = f.feed(store.read_all(limit=1000))
        assert not any(s.void.attributable for s in settled if s.void), me
        assert not f.ledger.cluster.faults and not any(m.banned for m in f.ledger.cluster.members.values())
        views.append((f.ledger.cluster, dict(f.ledger.txs)))
    assert all(v == views[0] for v in views)
