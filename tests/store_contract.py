"""One contract for every event-store adapter; each adapter's test module subclasses it.

(The habit of eventsourcing's tests/persistence.py: every adapter passes the same tests.)
"""

from __future__ import annotations

import itertools
import threading

from helpers import W, signer

from events.model import CLUSTER_STREAM
from events.store import GENESIS, NewEvent, Outcome, Unit
from events.writers import verify_batch


def ev(stream: str, key: str, **payload) -> NewEvent:
    return NewEvent(stream, "TransactionOpened", 1, {"tx_id": "t", "opened_at_ms": 0, "deadline_at_ms": 1,
                                                     **payload}, key)


class StoreContract:
    def make_store(self):
        raise NotImplementedError

    def test_positions_and_versions_are_gap_free(self):
        s = self.make_store()
        r = s.append([Unit({"a": 0}, (ev("a", "k1"), ev("a", "k2"))), Unit({"b": 0, "a": 2}, (ev("b", "k3"),))], W)
        assert [x.outcome for x in r] == [Outcome.APPENDED, Outcome.APPENDED]
        assert r[0].positions == (1, 2) and r[1].positions == (3,)
        assert [(x.position, x.stream_id, x.stream_version) for x in s.read_all()] == [
            (1, "a", 1), (2, "a", 2), (3, "b", 1)]
        assert s.stream_versions(["a", "b", "c"]) == {"a": 2, "b": 1, "c": 0}
        assert s.last_position() == 3

    def test_a_retried_append_is_a_no_op(self):
        s = self.make_store()
        u = Unit({"a": 0}, (ev("a", "k1"), ev("a", "k2")))
        s.append([u], W)
        assert s.append([u], W)[0].outcome is Outcome.DUPLICATE
        assert s.last_position() == 2

    def test_partly_recorded_unit_conflicts(self):
        s = self.make_store()
        s.append([Unit({"a": 0}, (ev("a", "k1"),))], W)
        r = s.append([Unit({"a": 1}, (ev("a", "k1"), ev("a", "k9")))], W)
        assert r[0].outcome is Outcome.CONFLICT
        assert s.last_position() == 1

    def test_stale_expectation_conflicts_and_so_do_units_built_on_it(self):
        s = self.make_store()
        s.append([Unit({"a": 0}, (ev("a", "k1"),))], W)
        r = s.append([Unit({"a": 0}, (ev("a", "k2"),)), Unit({"a": 1}, (ev("a", "k3"),)),
                      Unit({"a": 1, "b": 0}, (ev("b", "k4"),))], W)
        # unit 1 conflicts; unit 2 expected a@1 which still holds, so it appends; unit 3 then sees a@2.
        assert [x.outcome for x in r] == [Outcome.CONFLICT, Outcome.APPENDED, Outcome.CONFLICT]
        assert s.stream_versions(["a", "b"]) == {"a": 2, "b": 0}

    def test_read_only_expectations_are_checked(self):
        s = self.make_store()
        s.append([Unit({CLUSTER_STREAM: 0}, (ev(CLUSTER_STREAM, "c1"),))], W)
        r = s.append([Unit({CLUSTER_STREAM: 0, "tx:1": 0}, (ev("tx:1", "k1"),))], W)
        assert r[0].outcome is Outcome.CONFLICT

    def test_a_key_already_logged_under_another_stream_is_a_duplicate_and_writes_nothing(self):
        # Its stream has not moved, so only the key says "already recorded" (for Postgres: the unique
        # index refuses the optimistic append, which is then planned again against the logged keys).
        s = self.make_store()
        s.append([Unit({"a": 0}, (ev("a", "k1"),))], W)
        r = s.append([Unit({"b": 0}, (ev("b", "k1"),)), Unit({"c": 0}, (ev("c", "k2"),))], W)
        assert [x.outcome for x in r] == [Outcome.DUPLICATE, Outcome.APPENDED]
        rows = s.read_all()
        assert [(x.position, x.stream_id, x.idempotency_key) for x in rows] == [(1, "a", "k1"), (2, "c", "k2")]
        assert rows[1].prev_hash == rows[0].hash and all(x.content_hash() == x.hash for x in rows)

    def test_hash_chain_links_every_row(self):
        s = self.make_store()
        for i in range(5):
            s.append([Unit({"a": i}, (ev("a", f"k{i}", n=2**64 - 1 - i),))], signer(f"w{i}"))
        rows = s.read_all()
        assert rows[0].prev_hash == GENESIS
        for prev, row in itertools.pairwise(rows):
            assert row.prev_hash == prev.hash
        assert all(r.content_hash() == r.hash for r in rows)
        assert rows[4].payload["n"] == 2**64 - 5  # u64 survives the round trip

    def test_read_stream_and_keys(self):
        s = self.make_store()
        s.append([Unit({"a": 0, "b": 0}, (ev("a", "k1"), ev("b", "k2"), ev("a", "k3")))], W)
        assert [r.idempotency_key for r in s.read_stream("a")] == ["k1", "k3"]
        assert [r.idempotency_key for r in s.read_stream("a", after_version=1)] == ["k3"]
        assert s.has_keys(["k1", "k2", "zz"]) == {"k1", "k2"}

    def test_concurrent_appenders_never_leave_gaps_for_readers(self):
        """Readers following positions must never skip an event that commits late."""
        stores = [self.make_store() for _ in range(4)]
        seen: list[int] = []
        stop = threading.Event()

        def write(i: int) -> None:
            for j in range(25):
                stream = f"s{i}"
                stores[i].append([Unit({stream: j}, (ev(stream, f"{i}-{j}"),))], signer(f"w{i}"))

        def read() -> None:
            reader = self.make_store()
            last = 0
            while not stop.is_set() or last < 100:
                for r in reader.read_all(after=last, limit=50):
                    assert r.position == last + 1, f"reader skipped from {last} to {r.position}"
                    last = r.position
                    seen.append(last)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        rt = threading.Thread(target=read)
        rt.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        rt.join(30)
        assert seen == list(range(1, 101))

    def test_each_append_is_signed_by_its_writer_and_each_unit_carries_its_command(self):
        s = self.make_store()
        s.append([Unit({"a": 0}, (NewEvent("a", "TransactionOpened", 1, {"tx_id": "t", "opened_at_ms": 0,
                                                                         "deadline_at_ms": 1}, "k1",
                                           command=b'{"type":"X"}'), ev("a", "k2"))),
                  Unit({"a": 2}, (NewEvent("a", "TransactionOpened", 1, {"tx_id": "t", "opened_at_ms": 0,
                                                                         "deadline_at_ms": 1}, "k3",
                                           command=b'{"type":"Y"}'),))], W)
        rows = s.read_all()
        assert [r.command for r in rows] == [{"type": "X"}, None, {"type": "Y"}]
        assert [r.signature is not None for r in rows] == [False, False, True] and rows[-1].signed_from == 1
        assert verify_batch(W.public_key, 1, rows[-1].hash, rows[-1].signature)
        assert all(r.content_hash() == r.hash for r in rows)  # the command is in the chain
        s.append([Unit({"a": 3}, (ev("a", "k4"),))], signer("v"))
        last = s.read_all(after=3)[0]
        assert last.writer == "v" and last.signed_from == 4 and verify_batch(signer("v").public_key, 4, last.hash,
                                                                             last.signature)
