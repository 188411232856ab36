"""node.duty: the order in which members take up a transaction's votes (R13, scheduled)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from node import duty

names = st.lists(st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True), min_size=1, max_size=12, unique=True)
tx_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,40}", fullmatch=True)


@given(tx_ids, names, st.randoms())
def test_every_node_computes_the_same_order_whatever_order_it_lists_members(tx, members, rnd):
    shuffled = list(members)
    rnd.shuffle(shuffled)
    assert duty.ranking(tx, shuffled) == duty.ranking(tx, members)
    assert sorted(duty.ranking(tx, members)) == sorted(members)  # a permutation: each member once


@given(tx_ids, names)
def test_exactly_one_member_records_at_once_and_the_others_wait_by_rank(tx, members):
    delays = sorted(duty.delay_ms(tx, m, members, grace_ms=100) for m in members)
    assert delays == [100 * r for r in range(len(members))]


@given(tx_ids, names, st.data())
def test_a_member_leaving_moves_only_its_own_first_places(tx, members, data):
    gone = data.draw(st.sampled_from(members))
    first = duty.ranking(tx, members)[0]
    rest = [m for m in members if m != gone]
    if rest and first != gone:
        assert duty.ranking(tx, rest)[0] == first  # rendezvous hashing: stable for everyone else


def test_a_member_outside_the_eligible_set_stands_after_everyone():
    assert duty.rank("tx_1", "banned-node", ["a", "b", "c"]) == 3
    assert duty.delay_ms("tx_1", "banned-node", ["a", "b", "c"], grace_ms=10) == 30


def test_first_places_spread_evenly_over_members():
    members = [f"trustee-{i}" for i in range(1, 8)]
    firsts = Counter(duty.ranking(f"tx_{k}", members)[0] for k in range(7000))
    assert set(firsts) == set(members)
    assert all(800 <= c <= 1200 for c in firsts.values()), firsts  # 1,000 each, give or take
