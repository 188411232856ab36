"""Fuzz every input surface with a CI-sized budget (the bench runs the same checks at 100k each).

Each test feeds hypothesis inputs to a surface's ``check`` (tests/fuzz/fuzz_surfaces.py), which
asserts: only the documented exception types, no state change from invalid input, and accepted
input is well-formed. Known, reported bugs are tolerated here (FUZZ_STRICT=1 fails on them too)
and pinned by strict xfail tests in test_fuzz_found_bugs.py. FUZZ_BUDGET scales the budget.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import fuzz_surfaces as fs
import pytest
from hypothesis import HealthCheck, given, settings

SCALE = float(os.environ.get("FUZZ_BUDGET", "1"))


def budget(n: int) -> Any:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def feed(surface: Any, inp: object) -> None:
    try:
        surface.check(inp)
    except fs.Finding as f:
        fs.enforce(f)


def _fixture(make: Any) -> Iterator[Any]:
    s = make()
    yield s
    s.close()


@pytest.fixture(scope="module")
def gossip() -> Iterator[fs.GossipEdge]:
    yield from _fixture(fs.GossipEdge)


@pytest.fixture(scope="module")
def replay() -> Iterator[fs.Replay]:
    yield from _fixture(fs.Replay)


@pytest.fixture(scope="module")
def store() -> Iterator[fs.StoreSurface]:
    yield from _fixture(fs.StoreSurface)


@pytest.fixture(scope="module")
def api() -> Iterator[fs.ApiSurface]:
    yield from _fixture(fs.ApiSurface)


@pytest.fixture(scope="module")
def cli() -> Iterator[fs.CliSurface]:
    yield from _fixture(fs.CliSurface)


# --- the fuzzers ---------------------------------------------------------------------------------


@budget(1000)
@given(inp=fs.gossip_payloads())
def test_gossip_payloads(gossip: fs.GossipEdge, inp: tuple[str, bytes]) -> None:
    feed(gossip, inp)


@budget(2000)
@given(inp=fs.vote_inputs())
def test_signed_votes(inp: tuple[str, object]) -> None:
    feed(fs.Stateless(fs.check_vote), inp)


@budget(2000)
@given(cmd=fs.commands())
def test_decide_every_command(cmd: object) -> None:
    feed(fs.Stateless(fs.check_command), cmd)


@budget(2000)
@given(inp=fs.stored_events())
def test_stored_events_decode_and_fold(replay: fs.Replay, inp: tuple[str, int, object]) -> None:
    feed(replay, inp)


@budget(800)
@given(units=fs.units())
def test_store_append_malformed_units(store: fs.StoreSurface, units: list) -> None:
    feed(store, units)


@budget(800)
@given(raw=fs.http_requests())
def test_local_api_requests(api: fs.ApiSurface, raw: bytes) -> None:
    feed(api, raw)


@budget(800)
@given(argv=fs.cli_argvs())
def test_cli_argv(cli: fs.CliSurface, argv: list[str]) -> None:
    feed(cli, argv)


# --- valid input still works (one sanity property per surface) ------------------------------------


def test_gossip_valid_batch_is_accepted(gossip: fs.GossipEdge) -> None:
    from node import wire

    batch = [fs.signed_vote_json("tx", 1, 1), fs.signed_vote_json("tx", 1, 2)]
    payload = wire.encode([fs.SignedVote.from_json(v) for v in batch])
    assert gossip.check((fs.TS[1].peer_id, payload)) == "accepted"


def test_vote_round_trip() -> None:
    assert fs.check_vote(("json", fs.signed_vote_json("tc", 2**64 - 1, 3))) == "accepted"
    assert fs.check_vote(("args", ("tx", 0, "node-1", 0))) == "accepted"


def test_decide_accepts_a_valid_vote_and_submission_steps() -> None:
    assert fs.check_command(fs.TS[0].receive("tn", 1)) == "accepted"
    assert fs.check_command(fs.rules.RecordBroadcast("ts", 5, "0xh1")) == "accepted"
    assert fs.check_command(fs.rules.RecordConfirmed("ts", 5, "0xh1", 7)) == "accepted"


def test_every_recorded_event_decodes_and_folds(replay: fs.Replay) -> None:
    rows = replay.store.read_all(limit=1000)
    assert rows
    for r in rows:
        assert replay.check((r.event_type, r.schema_version, r.payload)) == "accepted"


def test_store_appends_a_valid_unit(store: fs.StoreSurface) -> None:
    unit = fs.Unit({"cluster": 2, "tx:a": 0}, (fs.NewEvent("cluster", "E", 1, {"a": 1}, "fresh:1"),
                                               fs.NewEvent("tx:a", "E", 1, {"b": [1]}, "fresh:2")))
    assert store.check([unit]) == "accepted"


def test_api_valid_vote_and_read(api: fs.ApiSurface) -> None:
    assert api.check(fs.api_valid_request("t_valid", 5)) == "accepted"  # a tx the fuzzer never signs
    assert api.check(fs.api_valid_request("t_valid", 6)) == "rejected"  # R14: 409, nothing signed
    get = f"GET /tx/tc HTTP/1.1\r\nAuthorization: Bearer {fs.TOKEN}\r\n\r\n".encode()
    assert api.check(get) == "accepted"
    assert api.check(b"GET /tx/tc HTTP/1.1\r\n\r\n") == "rejected"  # 401


def test_api_refuses_at_once_with_retry_after_when_the_worker_is_behind(api: fs.ApiSurface) -> None:
    """Back-pressure: 503 + Retry-After before anything is read, signed or queued; a later retry goes through."""
    calls = api.node.signer.counts()["calls"]
    api.node.overload = lambda: 2.0  # type: ignore[method-assign]
    try:
        resp = api.request(fs.api_valid_request("t_busy", 5))
    finally:
        api.node.overload = lambda: None  # type: ignore[method-assign]
    assert resp.startswith((b"HTTP/1.0 503", b"HTTP/1.1 503")) and b"Retry-After: 2\r\n" in resp, resp[:300]
    assert api.node.signer.counts()["calls"] == calls and api.node.outbox.empty()  # nothing signed or queued
    assert api.check(fs.api_valid_request("t_busy", 5)) == "accepted"


def test_cli_help_and_unreachable_database(cli: fs.CliSurface) -> None:
    assert cli.check(["--help"]) == "accepted"
    assert cli.check(["status"]) == "rejected"  # TVOTE_DSN points at port 1: a clean error, exit 1
    assert cli.check(["up", "--nodes", "3", "--threshold", "2"]) == "accepted"  # stubbed run
    assert cli.calls


def test_clients_that_reset_before_reading_leave_no_traceback(api: fs.ApiSurface, capfd) -> None:
    """200 clients that send a request without a token and reset before reading the 401: counted, not logged."""
    import socket
    import struct
    import time

    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", api.port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        s.sendall(b"POST /votes HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        s.close()
    time.sleep(0.5)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[:2000]
    assert api.check(fs.api_valid_request("t_after_resets", 1)) == "accepted"  # still serving
