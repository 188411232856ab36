"""One contract for every guard adapter (``recording.guard.Guard``); each adapter's test module subclasses it.

A subclass provides ``make_guards(n)``: ``n`` guards of different writers over one shared key space,
and ``expire(guard)``: that writer's lease runs out (it crashed).
"""

from __future__ import annotations

from recording.guard import Claim


def claim(expected: dict[str, int], written: dict[str, int], votes: dict[str, str] | None = None,
          counters: dict[str, str] | None = None) -> Claim:
    return Claim(expected, written, dict(votes or {}), dict(counters or {}))


class GuardContract:
    def make_guards(self, n: int) -> list:
        raise NotImplementedError

    def expire(self, guard) -> None:
        raise NotImplementedError

    def test_a_claim_moves_heads_and_takes_votes(self):
        (g,) = self.make_guards(1)
        assert g.claim([claim({"cluster": 0, "tx:a": 0}, {"tx:a": 2}, {"a/n1": "v1"},
                              {"transaction_status/a": "COLLECTING", "vote_counts/a/7": "1"})]) is None
        assert g.head("tx:a") == 2 and g.head("cluster") is None  # unwritten streams keep no head
        assert g.head_writer("tx:a") == g.node_id
        assert g.get("transaction_status/a") == "COLLECTING" and g.get("vote_counts/a/7") == "1"
        assert g.get("vote_counts/a/8") is None

    def test_a_stale_head_is_refused_with_what_the_guard_holds(self):
        a, b = self.make_guards(2)
        assert a.claim([claim({"tx:a": 0}, {"tx:a": 1})]) is None
        r = b.claim([claim({"tx:a": 0}, {"tx:a": 1})])
        assert r is not None and r.heads == {"tx:a": 1} and r.writers_alive == {"tx:a": True}
        assert r.head_writers == {"tx:a": a.node_id}  # who moved it, read in the same transaction
        assert b.claim([claim({"tx:a": 1}, {"tx:a": 1})]) is None
        assert a.head("tx:a") == 2 and a.head_writer("tx:a") == b.node_id

    def test_a_later_claim_in_the_batch_builds_on_an_earlier_one(self):
        (g,) = self.make_guards(1)
        assert g.claim([claim({"tx:a": 0}, {"tx:a": 1}), claim({"tx:a": 1}, {"tx:a": 2})]) is None
        assert g.head("tx:a") == 3

    def test_a_claimed_vote_is_refused_to_others_and_names_its_claimer(self):
        a, b = self.make_guards(2)
        assert a.claim([claim({"tx:a": 0}, {"tx:a": 1}, {"a/n1": "first"})]) is None
        r = b.claim([claim({"tx:a": 1}, {"tx:a": 1}, {"a/n1": "second"})])
        assert r is not None and r.heads == {"tx:a": 1}
        value, mod, ours = r.votes["a/n1"]
        assert value == "first" and mod > 0 and ours is False
        r2 = a.claim([claim({"tx:a": 1}, {"tx:a": 1}, {"a/n1": "again"})])
        assert r2 is not None and r2.votes["a/n1"][2] is True  # our own claim: we may release it

    def test_a_refused_batch_changes_nothing(self):
        a, b = self.make_guards(2)
        assert a.claim([claim({"tx:x": 0}, {"tx:x": 1})]) is None
        assert b.claim([claim({"tx:y": 0}, {"tx:y": 1}, {"y/n1": "v"}, {"k": "1"}),
                        claim({"tx:x": 0}, {"tx:x": 1})]) is not None
        assert b.head("tx:y") is None and b.get("k") is None
        assert b.claim([claim({"tx:y": 0}, {"tx:y": 1}, {"y/n1": "v"})]) is None  # the vote was not taken

    def test_release_vote_only_if_unchanged(self):
        (a,) = self.make_guards(1)
        assert a.claim([claim({"tx:a": 0}, {"tx:a": 1}, {"a/n1": "v"})]) is None
        _, mod, _ = a.claim([claim({"tx:a": 1}, {"tx:a": 1}, {"a/n1": "v"})]).votes["a/n1"]
        assert a.release_vote("a/n1", mod + 1000) is False
        assert a.release_vote("a/n1", mod) is True
        assert a.claim([claim({"tx:a": 1}, {"tx:a": 1}, {"a/n1": "v"})]) is None

    def test_repair_head_is_a_compare_and_swap(self):
        (g,) = self.make_guards(1)
        assert g.claim([claim({"tx:a": 0}, {"tx:a": 5})]) is None
        assert g.repair_head("tx:a", 4, 2) is False and g.head("tx:a") == 5  # never clobber a move we did not see
        assert g.repair_head("tx:a", 5, 2) is True and g.head("tx:a") == 2
        assert g.repair_head("tx:a", 2, 0) is True and g.head("tx:a") is None  # version 0 is "no head"
        assert g.repair_head("tx:b", None, 3) is True and g.head("tx:b") == 3

    def test_claims_and_writer_die_with_their_claimer(self):
        a, b = self.make_guards(2)
        assert a.claim([claim({"tx:a": 0}, {"tx:a": 1}, {"a/n1": "v"})]) is None
        self.expire(a)
        # the head goes with its writer's lease (etcd stays bounded): a claim on the old version is
        # refused with "no head", the log's version is put back, and the vote is free again
        assert b.head("tx:a") is None and b.head_writer("tx:a") is None
        r = b.claim([claim({"tx:a": 1}, {"tx:a": 1})])
        assert r is not None and r.heads == {"tx:a": None} and r.writers_alive == {"tx:a": False}
        assert r.head_writers == {"tx:a": None}
        assert b.repair_head("tx:a", None, 1)
        assert b.claim([claim({"tx:a": 1}, {"tx:a": 1}, {"a/n1": "v"})]) is None
