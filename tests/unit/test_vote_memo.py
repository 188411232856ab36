"""The signature-verify memo (events/vote.py): it saves work and memory, never changes an answer."""

from __future__ import annotations

import nacl.signing

from events import vote as vote_mod
from events.vote import SignedVote, Vote, sign, verify_all


def _keys(n: int) -> list[nacl.signing.SigningKey]:
    return [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(n)]


def test_a_cached_good_vote_does_not_let_a_forged_signature_or_another_key_pass() -> None:
    a, b = _keys(2)
    sv = sign(Vote("memo-1", 7, "n1", 1), a)
    assert sv.verifies_under(a.verify_key.encode())
    assert sv.verifies_under(a.verify_key.encode())  # the hit
    forged = SignedVote(sv.vote, bytes(64))
    assert not forged.verifies_under(a.verify_key.encode())
    assert not sv.verifies_under(b.verify_key.encode())
    other_value = SignedVote(Vote("memo-1", 8, "n1", 1), sv.signature)
    assert not other_value.verifies_under(a.verify_key.encode())


def test_a_malformed_key_cached_false_does_not_poison_a_valid_triple_that_shares_its_bytes() -> None:
    """Key and message are joined length-prefixed: (key[:-1], key[-1:] + msg) is another memo entry."""
    (a,) = _keys(1)
    sv = sign(Vote("memo-2", 1, "n1", 1), a)
    key = a.verify_key.encode()
    shifted = vote_mod._memo_key(key[:-1], key[-1:] + sv.vote.signing_bytes(), sv.signature)
    assert shifted != vote_mod._memo_key(key, sv.vote.signing_bytes(), sv.signature)
    assert not sv.verifies_under(key[:-1])
    assert sv.verifies_under(key)


def test_the_memo_stays_within_its_size_and_answers_the_same_after_eviction(monkeypatch) -> None:
    monkeypatch.setattr(vote_mod, "VERIFY_CACHE_SIZE", 16)
    monkeypatch.setattr(vote_mod, "_VERIFIED", {})
    (a,) = _keys(1)
    key = a.verify_key.encode()
    votes = [sign(Vote(f"memo-3-{i}", i, "n1", 1), a) for i in range(100)]
    verify_all([(sv, key) for sv in votes])
    assert all(sv.verifies_under(key) for sv in votes)
    assert len(vote_mod._VERIFIED) <= 16
    assert not SignedVote(votes[0].vote, votes[1].signature).verifies_under(key)


def test_the_memo_table_has_its_churned_size_from_the_start_and_keeps_it() -> None:
    """A FIFO memo's dict doubles once, on its first resize under churn (~4/3 of its capacity after it is
    full): ``churned_table`` does that resize up front, so the memo's memory is reached before any vote."""
    import os
    import sys

    for capacity in (16, 1000, vote_mod.VERIFY_CACHE_SIZE):
        table, plain = vote_mod.churned_table(capacity), {}
        start = sys.getsizeof(table)
        assert len(table) == 0
        sizes, plain_sizes = set(), set()
        for _ in range(5 * capacity):
            for d in (table, plain):
                if len(d) >= capacity:
                    d.pop(next(iter(d)))
                d[os.urandom(32)] = True
            sizes.add(sys.getsizeof(table))
            plain_sizes.add(sys.getsizeof(plain))
        assert sizes == {start}
        assert max(plain_sizes) == start  # the same table a plain dict reaches, only later
    assert sys.getsizeof(vote_mod._VERIFIED) == start  # the module's memo is made that way
