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


@given(tx_ids, names, st.data())
def test_the_members_ahead_are_those_ranked_before(tx, members, data):
    me = data.draw(st.sampled_from(members))
    order = duty.ranking(tx, members)
    assert duty.ahead_of(tx, me, members) == order[:order.index(me)]
    assert duty.ahead_of(tx, "not-a-member", members) == order


def test_take_over_only_in_turn_and_from_members_that_look_gone():
    grace, patience = 0.4, 5.0
    # not our turn yet
    assert not duty.take_over(10.0, due=10.4, arrived=10.0, ahead_last_append=[None], grace_s=grace,
                              patience_s=patience)
    # our turn; the member ahead appended a moment ago: alive but behind, so we wait ...
    assert not duty.take_over(10.5, due=10.4, arrived=10.0, ahead_last_append=[10.3], grace_s=grace,
                              patience_s=patience)
    # ... until it has been silent for a grace (down, frozen, cut off) ...
    assert duty.take_over(10.8, due=10.4, arrived=10.0, ahead_last_append=[10.3], grace_s=grace, patience_s=patience)
    # ... or never appended since we started ...
    assert duty.take_over(10.5, due=10.4, arrived=10.0, ahead_last_append=[None], grace_s=grace, patience_s=patience)
    # ... and one live member ahead is enough to wait, up to patience (a live recorder dropping votes)
    alive = [None, 14.9]
    assert not duty.take_over(14.9, due=10.8, arrived=10.0, ahead_last_append=alive, grace_s=grace,
                              patience_s=patience)
    assert duty.take_over(15.0, due=10.8, arrived=10.0, ahead_last_append=alive, grace_s=grace, patience_s=patience)


def test_take_over_says_why():
    grace, patience = 0.4, 5.0
    assert duty.take_over(10.8, due=10.4, arrived=10.0, ahead_last_append=[10.3], grace_s=grace,
                          patience_s=patience) == "silent"
    assert duty.take_over(15.0, due=10.4, arrived=10.0, ahead_last_append=[14.9], grace_s=grace,
                          patience_s=patience) == "patience"
    assert duty.take_over(10.5, due=10.4, arrived=10.0, ahead_last_append=[10.3], grace_s=grace,
                          patience_s=patience) is None
    # nobody ahead (our own vote, when no member ranked before us is connected): our turn is enough
    assert duty.take_over(10.4, due=10.4, arrived=10.0, ahead_last_append=[], grace_s=grace,
                          patience_s=patience) == "silent"


def test_a_busy_recorder_is_not_taken_for_a_dead_one():
    """Under load a live recorder appends once per worker pass (~1 s): the grace stretches to a few passes."""
    grace = duty.under_load(0.4, loop_s=1.0)
    assert grace == 3.0
    ahead_appended_last = [10.0]  # a pass ago
    assert duty.take_over(11.5, due=10.8, arrived=10.0, ahead_last_append=ahead_appended_last, grace_s=grace,
                          patience_s=5.0) is None
    assert duty.take_over(13.0, due=10.8, arrived=10.0, ahead_last_append=ahead_appended_last, grace_s=grace,
                          patience_s=5.0) == "silent"  # three passes without an append: gone after all


@given(st.floats(0, 60), st.floats(0, 60), st.floats(0, 60))
def test_load_only_ever_lengthens_a_wait(wait, loop, more):
    assert duty.under_load(wait, loop) >= wait
    assert duty.under_load(wait, loop + more) >= duty.under_load(wait, loop)
    assert duty.under_load(wait, 0.0) == wait  # an idle worker: the configured wait, unchanged


# node.duty.release_held: the first recorder gathers a transaction's votes into fewer appends

counts = st.integers(min_value=0, max_value=30)


@given(counts, counts, st.integers(min_value=1, max_value=30), st.floats(min_value=0, max_value=1))
def test_the_vote_that_completes_the_threshold_is_never_held(held, logged, threshold, waited):
    if logged < threshold <= held + logged:
        assert duty.release_held(held, logged, threshold, 30, waited, hold_s=1.0) in ("threshold", "hold")


@given(st.integers(min_value=1, max_value=30), counts, st.integers(min_value=1, max_value=30),
       st.integers(min_value=1, max_value=30), st.floats(min_value=0, max_value=10))
def test_nothing_is_held_past_the_hold(held, logged, threshold, eligible, over):
    assert duty.release_held(held, logged, threshold, eligible, 0.1 + over, hold_s=0.1) == "hold"


def test_short_of_the_threshold_votes_wait_and_past_it_they_wait_for_the_rest():
    # N=10, t=7: six votes wait for the seventh; the seventh goes at once with them
    assert duty.release_held(6, 0, 7, 10, 0.05, 0.1) is None
    assert duty.release_held(7, 0, 7, 10, 0.05, 0.1) == "threshold"
    assert duty.release_held(1, 6, 7, 10, 0.0, 0.1) == "threshold"
    # after consensus the last votes are gathered until every eligible member has voted
    assert duty.release_held(2, 7, 7, 10, 0.05, 0.1) is None
    assert duty.release_held(3, 7, 7, 10, 0.05, 0.1) == "all"
    # nothing held, nothing to release; t = 1: every vote goes at once
    assert duty.release_held(0, 3, 7, 10, 5.0, 0.1) is None
    assert duty.release_held(1, 0, 1, 10, 0.0, 0.1) == "threshold"


def test_a_loaded_recorder_holds_nothing():
    assert duty.may_hold(0.1, 0.02)
    assert not duty.may_hold(0.1, 0.1) and not duty.may_hold(0.1, 0.5)
    assert not duty.may_hold(0.0, 0.0)  # --record-hold-ms 0
