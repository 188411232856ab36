"""The signer (R14) in one process, against real SQLite files: signing rules, binding, damage, export/import.

Crashes (kill -9 at every step), the lock across processes, I/O failure and the etcd instance
claim are in tests/integration/test_signer_crash.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
from pathlib import Path

import nacl.signing
import pytest

from events.errors import InvalidCommand, InvalidVote
from events.vote import U64_MAX, SignedVote, Vote, sign
from node.signer import (
    COUNTERS,
    MAX_BALLOTS,
    ContradictoryRequest,
    Holder,
    ImportResult,
    InterchangeConflict,
    InterchangeInvalid,
    JournalCorrupt,
    JournalMissing,
    JournalPermissions,
    JournalUnavailable,
    Refused,
    Signed,
    Signer,
    SignerClosed,
    SignerLocked,
    Withheld,
    WrongJournal,
    lock_path,
    request_refused,
)
from node.signer.admin import main as cli
from node.signer.core import check_order, make_plan, outcomes

KEY = nacl.signing.SigningKey(b"\x01" * 32)
OTHER_KEY = nacl.signing.SigningKey(b"\x02" * 32)
NODE = "node-a"
NOW = 1_700_000_000_000


@pytest.fixture
def jpath(tmp_path: Path) -> Path:
    return tmp_path / "signer.journal"


@pytest.fixture
def signer(jpath: Path):
    s = Signer.open(jpath, KEY, NODE, create=True)
    yield s
    s.close()


def rows(path: Path) -> list[tuple]:
    """The journal's rows as SQLite holds them, read by a separate connection."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT tx_id, value, timestamp_ms, signature FROM votes ORDER BY tx_id").fetchall()


def edit(path: Path, *sql: str, params: tuple = ()) -> None:
    """Change a closed journal behind the signer's back (what an attacker or a bad restore does)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for s in sql:
            db.execute(s, params if "?" in s else ())
    finally:
        db.close()


def made(path: Path, ballots: list[tuple[str, int]], now: int = NOW, key=KEY, node=NODE) -> list[SignedVote]:
    """A closed journal holding these votes."""
    with Signer.open(path, key, node, create=True) as s:
        return [o.vote for o in s.sign_many(ballots, now)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# signing -----------------------------------------------------------------------------------------

def test_new_ballots_are_signed_journaled_and_verify(signer, jpath):
    out = signer.sign_many([("tx-1", 7), ("tx-2", 0), ("tx-3", U64_MAX)], NOW)
    assert [type(o) for o in out] == [Signed] * 3 and all(o.fresh for o in out)
    for o, (tx, v) in zip(out, [("tx-1", 7), ("tx-2", 0), ("tx-3", U64_MAX)], strict=True):
        assert o.vote.vote == Vote(tx, v, NODE, NOW)
        assert o.vote.verifies_under(bytes(KEY.verify_key))
    # journaled before the call returned, as the file says (values as decimal text, u64 intact)
    assert rows(jpath) == sorted((o.vote.vote.tx_id, str(o.vote.vote.value), str(NOW), o.vote.signature) for o in out)
    assert signer.counts()["signed"] == 3 and signer.counts()["commits"] == 1


def test_a_retry_returns_the_earlier_vote_byte_for_byte_without_a_commit(signer):
    first = signer.sign_many([("tx-1", 7)], NOW)[0]
    again = signer.sign_many([("tx-1", 7)], NOW + 5_000)[0]
    assert again == Signed(first.vote, False)  # same timestamp, same signature
    assert again.vote.vote.timestamp_ms == NOW
    assert signer.counts()["commits"] == 1 and signer.counts()["idempotent_returns"] == 1


def test_another_value_is_refused_with_the_earlier_vote_and_nothing_is_signed(signer, jpath):
    first = signer.sign_many([("tx-1", 7)], NOW)[0].vote
    before = rows(jpath)
    out = signer.sign_many([("tx-1", 8)], NOW + 1)
    assert out == [Refused("tx-1", 8, first)]
    assert request_refused(out)
    assert rows(jpath) == before
    assert signer.counts()["refused_conflict"] == 1 and signer.counts()["signed"] == 1


def test_a_request_with_one_refusal_signs_none_of_its_new_ballots(signer, jpath):
    a, b = (o.vote for o in signer.sign_many([("tx-a", 1), ("tx-b", 1)], NOW))
    out = signer.sign_many([("tx-new", 5), ("tx-a", 1), ("tx-a2", 3), ("tx-b", 2)], NOW + 1)
    assert out == [Withheld("tx-new", 5), Signed(a, False), Withheld("tx-a2", 3), Refused("tx-b", 2, b)]
    assert [r[0] for r in rows(jpath)] == ["tx-a", "tx-b"]  # the withheld ballots were never signed
    c = signer.counts()
    assert (c["withheld"], c["refused_conflict"], c["idempotent_returns"], c["signed"]) == (2, 1, 1, 2)
    # asked alone later, they are signed
    assert all(isinstance(o, Signed) and o.fresh for o in signer.sign_many([("tx-new", 5), ("tx-a2", 3)], NOW + 2))


def test_one_tx_twice_in_a_request_is_signed_once(signer, jpath):
    out = signer.sign_many([("tx-1", 4), ("tx-1", 4)], NOW)
    assert out[0] == out[1] and out[0].fresh
    assert len(rows(jpath)) == 1 and signer.counts()["signed"] == 1


def test_one_tx_with_two_values_in_a_request_refuses_the_whole_request(signer, jpath):
    with pytest.raises(ContradictoryRequest, match="tx-1 with two values"):
        signer.sign_many([("tx-0", 1), ("tx-1", 4), ("tx-1", 5)], NOW)
    assert rows(jpath) == []


BAD_BALLOTS = [
    pytest.param([("", 1)], InvalidVote, id="empty-tx"),
    pytest.param([("tx 1", 1)], InvalidVote, id="space-in-tx"),
    pytest.param([("t" * 129, 1)], InvalidVote, id="long-tx"),
    pytest.param([(b"tx-1", 1)], InvalidVote, id="bytes-tx"),
    pytest.param([("tx-1", -1)], InvalidVote, id="negative"),
    pytest.param([("tx-1", U64_MAX + 1)], InvalidVote, id="over-u64"),
    pytest.param([("tx-1", True)], InvalidVote, id="bool"),
    pytest.param([("tx-1", "1")], InvalidVote, id="str-value"),
    pytest.param([("tx-1", 1.0)], InvalidVote, id="float-value"),
    pytest.param([("tx-1",)], InvalidCommand, id="one-tuple"),
    pytest.param([("tx-1", 1, 2)], InvalidCommand, id="triple"),
    pytest.param(["tx-1"], InvalidCommand, id="str-ballot"),
    pytest.param([None], InvalidCommand, id="none-ballot"),
    pytest.param({"tx-1": 1}, InvalidCommand, id="dict"),
    pytest.param("tx-1", InvalidCommand, id="str-request"),
]


@pytest.mark.parametrize(("bad", "error"), BAD_BALLOTS)
def test_bad_input_is_a_typed_error_and_nothing_is_written(signer, jpath, bad, error):
    request = [("tx-ok", 1), *bad] if isinstance(bad, list) else bad
    with pytest.raises(error):
        signer.sign_many(request, NOW)
    assert rows(jpath) == []
    assert signer.counts()["refused_invalid"] == 1 and signer.counts()["signed"] == 0


@pytest.mark.parametrize("now", [-1, U64_MAX + 1, True, 1.5, "1", None])
def test_a_bad_clock_is_a_typed_error(signer, jpath, now):
    with pytest.raises(InvalidVote, match="now_ms"):
        signer.sign_many([("tx-1", 1)], now)
    assert rows(jpath) == []


def test_too_many_ballots_are_refused(signer, jpath):
    with pytest.raises(InvalidCommand, match="at most"):
        signer.sign_many([(f"tx-{i}", 1) for i in range(MAX_BALLOTS + 1)], NOW)
    assert rows(jpath) == []


def test_an_empty_request_is_a_no_op(signer):
    assert signer.sign_many([], NOW) == []
    assert signer.counts()["commits"] == 0


def test_signatures_survive_a_reopen_and_still_refuse_another_value(jpath):
    first = made(jpath, [("tx-1", 7), ("tx-max", U64_MAX)])
    with Signer.open(jpath, KEY, NODE) as s:
        assert s.sign_many([("tx-1", 7), ("tx-max", U64_MAX)], NOW + 9) == [Signed(v, False) for v in first]
        assert isinstance(s.sign_many([("tx-1", 6)], NOW + 9)[0], Refused)


def test_threads_racing_for_one_tx_get_one_value(signer):
    """The node calls the signer from several threads: one value wins, every other thread sees it refused."""
    import threading

    results: dict[int, object] = {}
    start = threading.Barrier(8)

    def ask(value: int) -> None:
        start.wait()
        results[value] = signer.sign_many([("tx-race", value)], NOW + value)[0]

    threads = [threading.Thread(target=ask, args=(v,)) for v in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in results.values() if isinstance(o, Signed)]
    assert len(winners) == 1 and winners[0].fresh
    assert all(o.earlier == winners[0].vote for o in results.values() if isinstance(o, Refused))
    assert signer.counts()["refused_conflict"] == 7


@pytest.mark.parametrize("node", ["", "a b", "n" * 65, None])
def test_a_bad_node_id_is_refused_before_anything_is_created(jpath, node):
    with pytest.raises(InvalidVote, match="node_id"):
        Signer.open(jpath, KEY, node, create=True)
    assert not jpath.exists()


def test_counts_name_every_counter(signer):
    assert set(signer.counts()) == set(COUNTERS) and not any(signer.counts().values())
    signer.sign_many([("tx-1", 1)], NOW)
    assert signer.counts()["calls"] == 1


def test_a_closed_signer_signs_nothing(jpath):
    s = Signer.open(jpath, KEY, NODE, create=True)
    s.close()
    s.close()  # twice is fine
    with pytest.raises(SignerClosed):
        s.sign_many([("tx-1", 1)], NOW)
    assert rows(jpath) == []


def test_the_pure_plan_never_signs_next_to_a_refusal():
    earlier = {"a": sign(Vote("a", 1, NODE, 5), KEY)}
    plan = make_plan([("b", 1), ("a", 2), ("c", 3)], earlier)
    assert plan.refused and plan.to_sign == []
    assert outcomes(plan, {}) == [Withheld("b", 1), Refused("a", 2, earlier["a"]), Withheld("c", 3)]
    plan = make_plan([("b", 1), ("a", 1), ("b", 1)], earlier)
    assert not plan.refused and plan.to_sign == [("b", 1)]


@pytest.mark.parametrize(("previous", "tx"), [("b", "b"), ("b", "a")])
def test_rows_out_of_order_or_twice_contradict_each_other(previous, tx):
    with pytest.raises(JournalCorrupt, match="contradict"):
        check_order(previous, tx)


# creation, binding, permissions --------------------------------------------------------------------

def test_a_missing_journal_is_not_created_unless_asked(jpath):
    with pytest.raises(JournalMissing, match="never start on a new one"):
        Signer.open(jpath, KEY, NODE)
    assert not jpath.exists()


def test_journal_lock_and_wal_files_are_mode_0600(signer, jpath):
    signer.sign_many([("tx-1", 1)], NOW)
    for p in (jpath, lock_path(jpath), Path(f"{jpath}-wal"), Path(f"{jpath}-shm")):
        assert oct(os.stat(p).st_mode & 0o777) == "0o600", p


def test_the_lock_file_names_its_holder(signer, jpath):
    assert lock_path(jpath).read_text().strip() == Holder.me().text()


def test_a_journal_opened_with_another_key_is_refused(jpath):
    made(jpath, [("tx-1", 1)])
    before = digest(jpath)
    with pytest.raises(WrongJournal, match=bytes(OTHER_KEY.verify_key).hex()) as e:
        Signer.open(jpath, OTHER_KEY, NODE)
    assert bytes(KEY.verify_key).hex() in str(e.value)
    assert digest(jpath) == before
    Signer.open(jpath, KEY, NODE).close()  # the lock was released on refusal


def test_a_journal_opened_as_another_node_is_refused(jpath):
    made(jpath, [("tx-1", 1)])
    with pytest.raises(WrongJournal, match="'node-b'"):
        Signer.open(jpath, KEY, "node-b")


def test_a_relabelled_journal_is_refused(jpath):
    """Copied from node-a and its metadata edited to say node-b: the rows were signed as node-a."""
    made(jpath, [("tx-1", 1)])
    edit(jpath, "UPDATE meta SET node_id = 'node-b'")
    with pytest.raises(JournalCorrupt, match="does not verify"):
        Signer.open(jpath, KEY, "node-b")


def test_a_wal_without_its_journal_refuses_creation(jpath):
    made(jpath, [("tx-1", 1)])
    Path(f"{jpath}-wal").write_bytes(b"x" * 100)
    os.chmod(f"{jpath}-wal", 0o600)
    jpath.unlink()
    with pytest.raises(JournalCorrupt, match="deleted"):
        Signer.open(jpath, KEY, NODE, create=True)
    assert not jpath.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o400, 0o200, 0o000])
def test_a_journal_with_unsafe_or_missing_permissions_is_refused(jpath, mode):
    made(jpath, [("tx-1", 1)])
    os.chmod(jpath, mode)
    with pytest.raises(JournalPermissions, match=f"{mode:04o}"):
        Signer.open(jpath, KEY, NODE)


def test_a_journal_that_is_a_symlink_or_a_directory_is_refused(tmp_path, jpath):
    made(jpath, [("tx-1", 1)])
    link = tmp_path / "link.journal"
    link.symlink_to(jpath)
    with pytest.raises(JournalPermissions, match="not a regular file"):
        Signer.open(link, KEY, NODE)
    (tmp_path / "dir.journal").mkdir()
    with pytest.raises(JournalPermissions, match="not a regular file"):
        Signer.open(tmp_path / "dir.journal", KEY, NODE)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_journal_owned_by_another_user_is_refused(jpath):
    made(jpath, [("tx-1", 1)])
    os.chown(jpath, 65534, 65534)
    with pytest.raises(JournalPermissions, match="owned by uid 65534"):
        Signer.open(jpath, KEY, NODE)


def test_an_unsafe_lock_or_wal_file_is_refused(jpath):
    made(jpath, [("tx-1", 1)])
    os.chmod(lock_path(jpath), 0o644)
    with pytest.raises(JournalPermissions, match="lock file has mode 0644"):
        Signer.open(jpath, KEY, NODE)
    os.chmod(lock_path(jpath), 0o600)
    Path(f"{jpath}-wal").write_bytes(b"")
    os.chmod(f"{jpath}-wal", 0o666)
    with pytest.raises(JournalPermissions, match="WAL/shm file has mode 0666"):
        Signer.open(jpath, KEY, NODE)


def test_a_journal_in_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(JournalPermissions, match="cannot open the signer lock file"):
        Signer.open(tmp_path / "nowhere" / "j", KEY, NODE, create=True)


def test_a_second_signer_on_one_journal_is_refused_naming_the_first(signer, jpath):
    with pytest.raises(SignerLocked, match=f"pid {os.getpid()} on host {socket.gethostname()}") as e:
        Signer.open(jpath, KEY, NODE)
    assert e.value.holder == Holder.me().text()
    signer.close()
    Signer.open(jpath, KEY, NODE).close()


def test_holder_text_round_trips_even_with_colons_in_the_host():
    h = Holder("fe80::1", 42, 1_700_000_000_000)
    assert Holder.parse(h.text()) == h
    assert "pid 42 on host fe80::1" in h.describe()
    assert Holder.parse("garbage") is None


# damage -----------------------------------------------------------------------------------------

def test_a_garbage_file_is_refused(jpath):
    jpath.write_bytes(os.urandom(8192))
    os.chmod(jpath, 0o600)
    with pytest.raises(JournalCorrupt, match="not a readable signer journal"):
        Signer.open(jpath, KEY, NODE)


def test_an_empty_file_is_refused_never_taken_for_a_new_journal(jpath):
    made(jpath, [("tx-1", 1)])
    os.truncate(jpath, 0)
    with pytest.raises(JournalCorrupt, match="empty"):
        Signer.open(jpath, KEY, NODE, create=True)


def test_a_truncated_journal_is_refused(jpath):
    made(jpath, [(f"tx-{i}", i) for i in range(2000)])
    os.truncate(jpath, jpath.stat().st_size // 2)
    with pytest.raises(JournalCorrupt, match="malformed"):
        Signer.open(jpath, KEY, NODE)


def test_another_sqlite_database_is_refused(jpath):
    edit(jpath, "CREATE TABLE votes (tx_id TEXT)")
    os.chmod(jpath, 0o600)
    with pytest.raises(JournalCorrupt, match="not a signer journal"):
        Signer.open(jpath, KEY, NODE)


def test_a_journal_of_a_future_schema_version_is_refused(jpath):
    made(jpath, [("tx-1", 1)])
    edit(jpath, "PRAGMA user_version = 2")
    with pytest.raises(JournalCorrupt, match="schema version 2"):
        Signer.open(jpath, KEY, NODE)


@pytest.mark.parametrize("sql", [
    "CREATE TABLE extra (x)",
    "CREATE INDEX by_value ON votes (value)",
    "CREATE TRIGGER t AFTER INSERT ON votes BEGIN DELETE FROM votes; END",
])
def test_a_changed_schema_is_refused(jpath, sql):
    made(jpath, [("tx-1", 1)])
    edit(jpath, sql)
    with pytest.raises(JournalCorrupt, match="schema was changed"):
        Signer.open(jpath, KEY, NODE)


def test_missing_metadata_is_refused(jpath):
    made(jpath, [("tx-1", 1)])
    edit(jpath, "DELETE FROM meta")
    with pytest.raises(JournalCorrupt, match="metadata"):
        Signer.open(jpath, KEY, NODE)


@pytest.mark.parametrize(("sql", "params"), [
    ("UPDATE votes SET value = '2' WHERE tx_id = 'tx-1'", ()),  # "re-vote" by editing the value
    ("UPDATE votes SET timestamp_ms = '1' WHERE tx_id = 'tx-1'", ()),
    ("UPDATE votes SET signature = ? WHERE tx_id = 'tx-1'", (b"\x00" * 64,)),
    ("INSERT INTO votes VALUES ('tx-9', '1', '5', ?)", (sign(Vote("tx-9", 1, NODE, 5), OTHER_KEY).signature,)),
    ("UPDATE votes SET value = '01' WHERE tx_id = 'tx-1'", ()),
    ("UPDATE votes SET signature = x'00' WHERE tx_id = 'tx-1'", ()),
])
def test_a_row_that_does_not_verify_is_corruption(jpath, sql, params):
    made(jpath, [("tx-1", 1), ("tx-2", 2)])
    edit(jpath, sql, params=params)
    with pytest.raises(JournalCorrupt, match=r"tx-1|tx-9"):
        Signer.open(jpath, KEY, NODE)


def test_a_journal_whose_rows_contradict_each_other_is_refused(jpath):
    """Two rows for one tx_id, each validly signed by us, smuggled in under the journal's schema text."""
    made(jpath, [("tx-0", 0)])
    a, b = (sign(Vote("tx-1", v, NODE, 5), KEY) for v in (1, 2))
    db = sqlite3.connect(jpath, isolation_level=None)
    (table_sql,) = db.execute("SELECT sql FROM sqlite_schema WHERE name = 'votes'").fetchone()
    db.execute("DROP TABLE votes")
    db.execute("CREATE TABLE votes (tx_id TEXT, value TEXT, timestamp_ms TEXT, signature BLOB)")
    for sv in (a, b):
        db.execute("INSERT INTO votes VALUES (?, ?, '5', ?)", (sv.vote.tx_id, str(sv.vote.value), sv.signature))
    db.execute("PRAGMA writable_schema = ON")
    db.execute("UPDATE sqlite_schema SET sql = ? WHERE name = 'votes'", (table_sql,))
    db.close()
    with pytest.raises(JournalCorrupt, match=r"malformed|contradict"):  # SQLite sees the tree is not the table's
        Signer.open(jpath, KEY, NODE)


def test_a_row_altered_while_running_stops_the_signer(signer, jpath):
    signer.sign_many([("tx-1", 1)], NOW)
    edit(jpath, "UPDATE votes SET value = '2' WHERE tx_id = 'tx-1'")
    with pytest.raises(JournalCorrupt, match="does not verify"):
        signer.sign_many([("tx-1", 2)], NOW)
    with pytest.raises(JournalUnavailable, match="restart"):
        signer.sign_many([("tx-other", 1)], NOW)
    assert signer.counts()["journal_failures"] == 1
    assert [r[0] for r in rows(jpath)] == ["tx-1"]


def test_a_row_altered_while_running_stops_an_export(signer, jpath):
    signer.sign_many([("tx-1", 1), ("tx-2", 2)], NOW)
    edit(jpath, "UPDATE votes SET timestamp_ms = '5' WHERE tx_id = 'tx-2'")
    with pytest.raises(JournalCorrupt, match="tx-2"):
        signer.export()
    with pytest.raises(JournalUnavailable, match="restart"):
        signer.sign_many([("tx-3", 1)], NOW)


def test_unfinished_creations_are_cleaned_up(tmp_path, jpath):
    leftover = tmp_path / f".{jpath.name}.creating-99999"
    leftover.write_bytes(b"half")
    made(jpath, [("tx-1", 1)])
    assert not leftover.exists()


# export / import ---------------------------------------------------------------------------------

def test_export_is_deterministic_sorted_and_documented(jpath):
    made(jpath, [("tx-b", 2), ("tx-a", U64_MAX), ("tx-c", 0)])
    with Signer.open(jpath, KEY, NODE) as s:
        raw = s.export()
        assert s.export() == raw
    with Signer.open(jpath, KEY, NODE) as s:
        assert s.export() == raw
    doc = json.loads(raw)
    assert doc["metadata"] == {
        "interchange_format": "threshold-vote-signer-interchange",
        "interchange_format_version": "1",
        "domain_tag": "threshold-vote/v1/vote",
        "node_id": NODE,
        "vote_public_key": bytes(KEY.verify_key).hex(),
    }
    assert [(e["tx_id"], e["value"], e["timestamp_ms"]) for e in doc["data"]] == [
        ("tx-a", str(U64_MAX), str(NOW)), ("tx-b", "2", str(NOW)), ("tx-c", "0", str(NOW))]


def exported(path: Path, ballots: list[tuple[str, int]], now: int = NOW) -> bytes:
    made(path, ballots, now)
    with Signer.open(path, KEY, NODE) as s:
        return s.export()


def test_a_move_round_trips_through_a_new_journal(tmp_path, jpath):
    raw = exported(tmp_path / "old.journal", [(f"tx-{i}", i) for i in range(50)])
    s, result = Signer.create_from_interchange(jpath, KEY, NODE, raw)
    with s:
        assert result == ImportResult(50, 0)
        assert s.export() == raw
        assert isinstance(s.sign_many([("tx-3", 4)], NOW)[0], Refused)
        assert s.import_interchange(raw) == ImportResult(0, 50)  # again: a no-op
        assert s.counts()["imported"] == 50


def test_import_adds_new_entries_and_keeps_ours_for_the_same_value(tmp_path, jpath):
    raw = exported(tmp_path / "old.journal", [("tx-1", 1), ("tx-2", 2)], now=NOW - 10)
    ours = made(jpath, [("tx-1", 1)])[0]
    with Signer.open(jpath, KEY, NODE) as s:
        assert s.import_interchange(raw) == ImportResult(1, 1)
        assert s.sign_many([("tx-1", 1)], NOW + 1) == [Signed(ours, False)]  # our timestamp kept
    assert [r[0] for r in rows(jpath)] == ["tx-1", "tx-2"]


def test_an_entry_contradicting_the_journal_imports_nothing(tmp_path, jpath):
    raw = exported(tmp_path / "old.journal", [("tx-0", 0), ("tx-1", 1), ("tx-2", 2)])
    made(jpath, [("tx-1", 9)])
    before = rows(jpath)
    with Signer.open(jpath, KEY, NODE) as s:
        with pytest.raises(InterchangeConflict, match="tx-1: the file says 1, the journal holds 9"):
            s.import_interchange(raw)
        assert s.counts()["import_refused"] == 1
        assert s.sign_many([("tx-3", 3)], NOW)[0].fresh  # the signer goes on
    assert rows(jpath)[:1] == before and len(rows(jpath)) == 2


def mutate(raw: bytes, fn) -> bytes:
    doc = json.loads(raw)
    fn(doc)
    return json.dumps(doc).encode()


def _second_value(doc):
    sv = sign(Vote("tx-1", 99, NODE, NOW), KEY)  # a genuine signature of ours for another value
    doc["data"].append({"tx_id": "tx-1", "value": "99", "timestamp_ms": str(NOW), "signature": sv.signature.hex()})


def _other_key_entry(doc):
    sv = sign(Vote("tx-7", 1, NODE, NOW), OTHER_KEY)
    doc["data"].append({"tx_id": "tx-7", "value": "1", "timestamp_ms": str(NOW), "signature": sv.signature.hex()})


def _set(section, key, value):
    def fn(doc):
        (doc["metadata"] if section == "metadata" else doc["data"][0])[key] = value
    return fn


BAD_FILES = [
    pytest.param(_set("metadata", "node_id", "node-b"), "for node 'node-b'", id="other-node"),
    pytest.param(_set("metadata", "vote_public_key", bytes(OTHER_KEY.verify_key).hex()), "for vote key",
                 id="other-key"),
    pytest.param(_set("metadata", "vote_public_key", "AB" * 32), "lowercase hex", id="key-uppercase"),
    pytest.param(_set("metadata", "interchange_format", "EIP-3076"), "not a threshold-vote", id="format"),
    pytest.param(_set("metadata", "interchange_format_version", "2"), "not supported", id="version"),
    pytest.param(_set("metadata", "interchange_format_version", 1), "not supported", id="version-int"),
    pytest.param(_set("metadata", "domain_tag", "other/v1/vote"), "domain", id="domain"),
    pytest.param(_set("metadata", "extra", 1), "exactly the keys", id="metadata-extra-key"),
    pytest.param(lambda d: d["metadata"].pop("node_id"), "exactly the keys", id="metadata-missing-key"),
    pytest.param(_set("data", "value", "2"), "does not verify", id="value-edited"),
    pytest.param(_set("data", "timestamp_ms", "1"), "does not verify", id="timestamp-edited"),
    pytest.param(_set("data", "signature", "00" * 64), "does not verify", id="signature-zero"),
    pytest.param(_set("data", "signature", "00" * 63), "128 lowercase hex", id="signature-short"),
    pytest.param(_set("data", "value", 1), "decimal string", id="value-number"),
    pytest.param(_set("data", "value", "01"), "decimal string", id="value-leading-zero"),
    pytest.param(_set("data", "value", str(U64_MAX + 1)), "decimal string", id="value-over-u64"),
    pytest.param(_set("data", "value", "-1"), "decimal string", id="value-negative"),
    pytest.param(_set("data", "tx_id", "tx 1"), "tx_id", id="tx-id-bad"),
    pytest.param(_set("data", "node_id", NODE), "exactly the keys", id="entry-extra-key"),
    pytest.param(_second_value, "listed with two values", id="tx-twice-two-values"),
    pytest.param(_other_key_entry, "does not verify", id="entry-signed-by-other-key"),
    pytest.param(lambda d: d.update(data={}), "must be a list", id="data-not-list"),
    pytest.param(lambda d: d.update(extra=[]), "exactly 'metadata' and 'data'", id="top-extra-key"),
]


@pytest.mark.parametrize(("fn", "message"), BAD_FILES)
def test_a_bad_interchange_file_is_refused_whole(tmp_path, jpath, fn, message):
    raw = exported(tmp_path / "old.journal", [("tx-1", 1), ("tx-2", 2)])
    made(jpath, [("tx-5", 5)])
    with Signer.open(jpath, KEY, NODE) as s:
        before = s.export()
        with pytest.raises(InterchangeInvalid, match=message):
            s.import_interchange(mutate(raw, fn))
        assert s.export() == before
        assert s.counts()["import_refused"] == 1


@pytest.mark.parametrize(("raw", "message"), [
    (b"\xff\xfe not json", "not JSON"),
    (b"[]", "exactly 'metadata' and 'data'"),
    (b'{"metadata": {}, "data": [], "data": []}', "repeats the key 'data'"),
])
def test_a_file_that_is_not_an_interchange_document_is_refused(signer, raw, message):
    with pytest.raises(InterchangeInvalid, match=message):
        signer.import_interchange(raw)


def test_an_entry_listed_twice_identically_is_one_entry(tmp_path, jpath):
    raw = exported(tmp_path / "old.journal", [("tx-1", 1)])
    doubled = mutate(raw, lambda d: d["data"].append(dict(d["data"][0])))
    s, result = Signer.create_from_interchange(jpath, KEY, NODE, doubled)
    s.close()
    assert result == ImportResult(1, 0)


def test_a_repeated_json_key_inside_an_entry_is_refused(tmp_path, signer):
    raw = exported(tmp_path / "old.journal", [("tx-1", 1)]).decode()
    raw = raw.replace('"value": "1",', '"value": "1", "value": "2",')
    with pytest.raises(InterchangeInvalid, match="repeats the key 'value'"):
        signer.import_interchange(raw.encode())


def test_a_bad_file_creates_no_journal(tmp_path, jpath):
    raw = exported(tmp_path / "old.journal", [("tx-1", 1)])
    for bad in (mutate(raw, _set("metadata", "node_id", "node-b")), mutate(raw, _set("data", "value", "3"))):
        with pytest.raises(InterchangeInvalid):
            Signer.create_from_interchange(jpath, KEY, NODE, bad)
        assert not jpath.exists()


def test_importing_into_a_journal_of_another_node_is_refused(tmp_path, jpath):
    raw = exported(tmp_path / "old.journal", [("tx-1", 1)])
    made(jpath, [("tx-2", 1)], node="node-b")
    with pytest.raises(InterchangeInvalid, match="for node 'node-a'"):
        Signer.create_from_interchange(jpath, KEY, "node-b", raw)
    with pytest.raises(WrongJournal):
        Signer.create_from_interchange(jpath, KEY, NODE, raw)


# the operator commands ---------------------------------------------------------------------------

def test_the_cli_moves_a_trustee_and_refuses_mistakes(tmp_path, capsys):
    key = tmp_path / "key"
    key.write_text(bytes(KEY).hex() + "\n")
    key.chmod(0o600)
    old, new, out = tmp_path / "old.journal", tmp_path / "new.journal", tmp_path / "export.json"
    common = ["--key", str(key), "--node-id", NODE]
    assert cli(["check", "--journal", str(old), *common]) == 2  # no journal: refused, not created
    assert cli(["init", "--journal", str(old), *common]) == 0
    with Signer.open(old, KEY, NODE) as s:
        s.sign_many([("tx-1", 1), ("tx-2", 2)], NOW)
        assert cli(["export", "--journal", str(old), *common, "--out", str(out)]) == 2  # the node runs
        assert "another process signs with this journal" in capsys.readouterr().err
    assert cli(["export", "--journal", str(old), *common, "--out", str(out)]) == 0
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert cli(["export", "--journal", str(old), *common, "--out", str(out)]) == 2  # never overwrites
    assert cli(["import", "--journal", str(new), "--key", str(key), "--node-id", "node-b", "--file", str(out)]) == 2
    assert not new.exists()
    assert cli(["import", "--journal", str(new), *common, "--file", str(out)]) == 0
    assert "imported 2 votes" in capsys.readouterr().out
    assert cli(["check", "--journal", str(new), *common]) == 0
    assert "2 signed votes, verified" in capsys.readouterr().out
    assert rows(new) == rows(old)


def test_votes_since_lists_what_a_restarted_node_may_still_owe_the_log(signer):
    for tx, at in (("a", 100), ("b", 200), ("c", 300)):
        signer.sign_many([(tx, 1)], at)
    assert [sv.vote.tx_id for sv in signer.votes_since(200)] == ["b", "c"]
    assert all(sv.verifies_under(signer.vote_key) for sv in signer.votes_since(0))
    assert signer.votes_since(301) == []
