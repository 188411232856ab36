"""Minimal reproductions of what the fuzzers found, one per bug (B1-B13), kept as regression tests.

Why keep them beside the fuzzers: a fuzzer finds a bug again only by chance; these find it every
time. They were strict xfails until the fixes landed (f71a1bc). A new finding gets a reproduction
here, as a strict xfail naming the file to change, and an entry in ``KNOWN`` (fuzz_surfaces.py)
until it is fixed.
"""

from __future__ import annotations

import fuzz_surfaces as fs
import pytest
from helpers import W, bootstrap

from events import errors, rules
from events.memory_store import MemoryStore
from events.store import NewEvent, Unit
from events.upcast import decode
from events.vote import Vote
from node import wire

# --- B1: src/node/wire.py decode: json.loads errors other than JSONDecodeError escape --------------


# Fuzz find B1 (fixed): src/node/wire.py: decode catches only JSONDecodeError/UnicodeDecodeError
@pytest.mark.parametrize("payload", [b'{"v":1,"votes":[' + b"1" * 5000 + b"]}", b"[" * 100_000])
def test_b1_wire_decode_rejects_huge_ints_and_deep_nesting(payload: bytes) -> None:
    with pytest.raises(errors.InvalidVote):
        wire.decode(payload)


# Fuzz find B1 (fixed): src/node/wire.py: the gossip validator raises instead of dropping the message
def test_b1_validator_drops_pathological_json() -> None:
    edge = fs.GossipEdge()
    try:
        assert edge.node._validate(fs.TS[1].peer_id, b"[" * 100_000) is False
        assert edge.node.counters.snapshot() == {"dropped_garbage": 1}
    finally:
        edge.close()


# --- B2: src/events/rules.py: unhashable ids reach dict lookups --------------------------------------


# Fuzz find B2 (fixed): src/events/rules.py Ledger.view / _remove / _unban: dict.get on an unhashable id
@pytest.mark.parametrize("cmd", [rules.CheckDeadline(["tx"], 1), rules.RecordConfirmed({"t": 1}, 1, "h", 1),
                                 rules.Unban(["node-1"], "op", "r"), rules.RemoveMember({}, "op", "r")])
def test_b2_unhashable_ids_are_rejected(cmd: object) -> None:
    ledger, _ = bootstrap(3, 2)
    with pytest.raises(errors.CommandRejected):
        ledger.execute(cmd)  # type: ignore[arg-type]


# --- B3: repr()/str() of an int over 4300 digits raises ValueError inside error messages -------------


# Fuzz find B3 (fixed): src/events/rules.py _int (and _remove, StaleLock messages): repr of a huge int raises
@pytest.mark.parametrize("cmd", [rules.Configure(fs.HUGE, "op"), rules.ApplyRetention(fs.HUGE, "op"),
                                 rules.RemoveMember("node-1", "op", "r", fs.HUGE)])
def test_b3_huge_ints_are_rejected_by_the_decider(cmd: object) -> None:
    ledger, _ = bootstrap(3, 2)
    with pytest.raises(errors.CommandRejected):
        ledger.execute(cmd)  # type: ignore[arg-type]


# Fuzz find B3 (fixed): src/events/vote.py check_u64/check_tx_id/check_node_id: repr of a huge int raises
@pytest.mark.parametrize("args", [("tx", fs.HUGE, "n", 1), (fs.HUGE, 1, "n", 1), ("tx", 1, fs.HUGE, 1)])
def test_b3_huge_ints_are_rejected_by_vote(args: tuple) -> None:
    with pytest.raises(errors.InvalidVote):
        Vote(*args)


# --- B4 / B5: the submission steps do not type-check their fields ------------------------------------


# Fuzz find B4 (fixed): src/events/rules.py _record_failed: c.error[:MAX_TEXT] before checking it is a str
@pytest.mark.parametrize("error", [5, None])
def test_b4_record_failed_with_a_non_text_error_is_rejected(error: object) -> None:
    with pytest.raises(errors.CommandRejected):
        fs.clone(fs.BASE).execute(rules.RecordFailed("ts", 5, error, True))  # type: ignore[arg-type]


# Fuzz find B5 (fixed): src/events/rules.py _fenced: lock_revision is compared, never type-checked (5.0, True pass)
@pytest.mark.parametrize("rev", [5.0])
def test_b5_fencing_token_must_be_an_int(rev: object) -> None:
    with pytest.raises(errors.CommandRejected):
        fs.clone(fs.BASE).execute(rules.RecordBroadcast("ts", rev, "0xh1"))  # type: ignore[arg-type]


# Fuzz find B5 (fixed): src/events/rules.py _remove: isinstance(new_t, int) lets True through as a threshold
def test_b5_remove_member_threshold_true_is_rejected() -> None:
    ledger, _ = bootstrap(3, 2)
    with pytest.raises(errors.CommandRejected):
        ledger.execute(rules.RemoveMember("node-3", "op", "r", True))


# --- B6 / B7: stored events: upcasting and from_payload ---------------------------------------------


# Fuzz find B6 (fixed): src/events/upcast.py: the v1 ReputationChanged upcaster runs outside decode's try
@pytest.mark.parametrize("payload", [{}, {"score": "x"}, {"score": float("nan")}, {"score": 1e400}, []])
def test_b6_bad_v1_reputation_payload_is_invalid_command(payload: object) -> None:
    with pytest.raises(errors.InvalidCommand):
        decode("ReputationChanged", 1, payload)  # type: ignore[arg-type]


# Fuzz find B7 (fixed): src/events/model.py Event.from_payload: a non-object payload raises AttributeError
@pytest.mark.parametrize("payload", [[], None, "x", 1])
def test_b7_non_object_payload_is_invalid_command(payload: object) -> None:
    with pytest.raises(errors.InvalidCommand):
        decode("TransactionOpened", 1, payload)  # type: ignore[arg-type]


# Fuzz find B7 (fixed): src/events/model.py Event.from_payload: field types are never checked
def test_b7_ill_typed_payload_is_invalid_command() -> None:
    with pytest.raises(errors.InvalidCommand):
        decode("MemberAdmitted", 1, {"node_id": 1, "vote_key": "zz", "peer_id": [], "operator": None, "seq": "x"})


# Found by the fuzzers (fixed): B7: an ill-typed payload that decode lets through then crashes the projector's fold
def test_b7_projector_fold_gets_a_typed_error() -> None:
    replay = fs.Replay()
    payload = {"tx_id": "tn", "opened_at_ms": "soon", "deadline_at_ms": 1}
    assert replay.check(("TransactionOpened", 1, payload)) == "rejected"


# --- B8: src/events/memory_store.py: a malformed event half-writes the batch -------------------------


# Fuzz find B8 (fixed): src/events/store.py plan does not validate NewEvent fields; memory_store.py appended row by row
@pytest.mark.parametrize("bad", [
    NewEvent("tx:a", "E", 70_000, {}, "k2"),  # schema_version over SMALLINT / struct 'H'
    NewEvent("tx:a", "E", 1, {}, b"k2"),  # type: ignore[arg-type]  # a bytes key
])
def test_b8_malformed_event_changes_nothing(bad: NewEvent) -> None:
    s = MemoryStore()
    good = Unit({"cluster": 0}, (NewEvent("cluster", "E", 1, {}, "k1"),))
    with pytest.raises(ValueError):
        s.append([good, Unit({"tx:a": 0}, (bad,))], W)
    assert s.last_position() == 0 and s.read_all() == []


# --- B9: src/node/api.py: http.server's own errors answer HTML, or nothing like HTTP ----------------


@pytest.fixture(scope="module")
def api():
    a = fs.ApiSurface()
    yield a
    a.close()


# Fuzz find B9 (fixed): src/node/api.py: send_error (501/400/414/431) answers HTML, not JSON
@pytest.mark.parametrize("raw", [b"PUT /votes HTTP/1.1\r\n\r\n", b"GET /x HTTP/2.0\r\n\r\n", b"\x16\x03\x01\r\n\r\n"])
def test_b9_protocol_errors_answer_json(api, raw: bytes) -> None:
    assert api.check(raw) == "rejected"


# Fuzz find B9 (fixed): src/node/api.py: an empty request line (leading CRLF, RFC 9112 2.2) got no answer
@pytest.mark.parametrize("raw", [b"\r\nGET /healthz HTTP/1.1\r\n\r\n", b"\n /votes HTTP/1.1\r\n\r\n"])
def test_b9_leading_empty_line_gets_an_answer(api, raw: bytes) -> None:
    assert api.check(raw) in ("accepted", "rejected")


# Fuzz find B9 (fixed): src/node/api.py: a request line without a version is served as HTTP/0.9 (no status line)
def test_b9_http09_is_refused_with_a_status(api) -> None:
    assert api.check(b"GET /healthz\r\n\r\n") == "rejected"


# --- B10: src/tvote/cli.py: malformed DSN or URL ends in a traceback ---------------------------------


@pytest.fixture(scope="module")
def cli():
    c = fs.CliSurface()
    yield c
    c.close()


# Fuzz find B10 (fixed): src/tvote/cli.py _connect_check caught only OperationalError (bad DSN: ProgrammingError)
@pytest.mark.parametrize("dsn", ["garbage", "x=1", "'unclosed", "a\x00b"])
def test_b10_malformed_dsn_is_a_clean_error(cli, dsn: str) -> None:
    assert cli.check(["status", "--dsn", dsn]) == "rejected"


# Fuzz find B10 (fixed): src/tvote/cli.py migrate: no error handling around alembic (bad or unreachable URL)
@pytest.mark.parametrize("url", ["garbage", "nosuch://x", "postgresql+psycopg://u@127.0.0.1:1/db"])
def test_b10_migrate_bad_url_is_a_clean_error(cli, url: str) -> None:
    assert cli.check(["migrate", "--url", url]) == "rejected"


# --- B11: the folds trust that the log came from the decider -----------------------------------------


# Fuzz find B11 (fixed): src/projections/projector.py apply: KeyError on an event that names no known row
def test_b11_fold_of_an_event_for_an_unknown_member_is_a_typed_error() -> None:
    replay = fs.Replay()
    assert replay.check(("NodeBanned", 1, {"node_id": "ghost", "peer_id": "p", "reason": "R", "cause": "c"})) \
        == "rejected"


# Fuzz find B13 (fixed): src/projections/projector.py apply: OverflowError on a deadline before year 1
def test_b13_a_time_outside_the_calendar_is_a_typed_refusal_of_the_fold() -> None:
    replay = fs.Replay()
    assert replay.check(("TransactionOpened", 1, {"tx_id": "tc", "opened_at_ms": 0,
                                                  "deadline_at_ms": -62_135_596_800_001})) == "rejected"


def test_no_known_bug_is_tolerated() -> None:
    """B1-B13 are fixed: the fuzzers tolerate nothing (a new entry needs a reproduction here)."""
    assert fs.KNOWN == []


# --- B12: src/node/api.py: a client that sends less body than it announced holds a thread forever ----


# Fuzz find B12 (fixed): src/node/api.py: no socket timeout on the handler (slow or short bodies hang a thread)
def test_b12_short_body_gets_an_answer_without_closing(api) -> None:
    import socket

    head = f"POST /votes HTTP/1.1\r\nAuthorization: Bearer {fs.TOKEN}\r\nContent-Length: 100\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", api.port), timeout=8) as s:
        s.sendall(head + b'{"tx_id"')  # 8 of the 100 bytes announced, and the connection stays open
        try:
            answer = s.recv(4096)
        except TimeoutError:
            answer = b""
    assert answer.startswith(b"HTTP/1."), "no answer within 8 s: the server thread still waits for the body"
