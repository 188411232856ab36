"""``canonical_json`` is ``json.dumps(sort_keys, compact, ASCII)`` byte for byte: the hash chain depends on it.

It reuses json's C encoder instead of calling ``dumps`` (issue 15: every row written and checked is
encoded); any difference would change every row's hash, so it is held to ``dumps`` on arbitrary
JSON-native values, and its fallback (no C accelerator) to the same.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import store
from events.store import canonical_json

_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text() | st.floats()
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)


def _dumps(v: object) -> bytes:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json, max_size=6))
def test_it_is_dumps_byte_for_byte_and_so_is_its_fallback(payload):
    assert canonical_json(payload) == _dumps(payload)
    assert store._CANONICAL.encode(payload).encode() == _dumps(payload)


def test_the_c_encoder_is_in_use_here_and_the_fallback_gives_the_same(monkeypatch):
    assert store._encode is not None  # CPython's accelerator: what the speed-up rests on
    row = {"tx_id": "t\u00e9\u2028", "vote": {"value": 7, "signature": "ab" * 64}, "ok": True, "none": None}
    fast = canonical_json(row)
    monkeypatch.setattr(store, "_encode", None)
    assert canonical_json(row) == fast == _dumps(row)


def test_what_is_not_json_is_refused_as_dumps_refuses_it():
    with pytest.raises(TypeError, match="bytes is not JSON serializable"):
        canonical_json({"x": b"raw"})
    with pytest.raises(TypeError):
        _dumps({"x": b"raw"})
