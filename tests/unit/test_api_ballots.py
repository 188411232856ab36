"""POST /votes bodies: one vote, or a batch that is checked whole before anything is cast."""

from __future__ import annotations

import json

import pytest

from events.errors import InvalidVote
from node.api import MAX_BODY, MAX_CAST, ballots


def parse(body: object) -> list[tuple[str, int]]:
    return ballots(body, len(json.dumps(body)))


def test_one_vote_and_a_batch():
    assert parse({"tx_id": "tx_1", "value": 7}) == [("tx_1", 7)]
    assert parse({"votes": [{"tx_id": "a", "value": 1}, {"tx_id": "b", "value": 2**64 - 1}]}) == [
        ("a", 1), ("b", 2**64 - 1)]
    assert len(parse({"votes": [{"tx_id": f"t{i}", "value": i} for i in range(MAX_CAST)]})) == MAX_CAST


@pytest.mark.parametrize("body,why", [
    ([], "JSON object"),
    ({"votes": []}, "1..1000"),
    ({"votes": {"tx_id": "a", "value": 1}}, "list"),
    ({"votes": [{"tx_id": f"t{i}", "value": i} for i in range(MAX_CAST + 1)]}, "1..1000"),
    ({"votes": [{"tx_id": "a", "value": 1}, "x"]}, r"votes\[1\] must be an object"),
    ({"votes": [{"tx_id": "a", "value": 1}, {"tx_id": "bad id!", "value": 1}]}, r"votes\[1\]: tx_id"),
    ({"votes": [{"tx_id": "a", "value": -1}]}, r"votes\[0\]: value"),
    ({"votes": [{"tx_id": "a", "value": True}]}, r"votes\[0\]: value"),
    ({"votes": [{"tx_id": "a", "value": 1}, {"tx_id": "a", "value": 2}]}, "same tx_id twice"),
    ({"tx_id": "a"}, "value"),
])
def test_bad_bodies_are_refused_whole(body, why):
    with pytest.raises(InvalidVote, match=why):
        parse(body)


def test_a_single_vote_keeps_its_small_body_limit():
    with pytest.raises(InvalidVote, match=str(MAX_BODY)):
        ballots({"tx_id": "a", "value": 1}, MAX_BODY + 1)
