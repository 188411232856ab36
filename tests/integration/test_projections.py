"""Projections from the real log: contents, replay equals live (R12), and the audit of the chain."""

from __future__ import annotations

import psycopg
import pytest
from helpers import Writers, admin, trustees

from events import rules
from events.audit import verify
from events.postgres_store import PostgresStore
from events.store import NewEvent, Unit
from projections.digest import digest
from projections.projector import Projector
from projections.replay import replay


def scenario(database) -> Writers:
    """The seed's scenarios on one log: consensus, minority, double vote, forgery, silence, submission."""
    ts = trustees(5)
    # operator "op", submitter "sub-1", and node-3's node recording (node-3 is never banned here)
    rec = Writers(PostgresStore(database.app_dsn), voter=ts[2])
    rec.execute([rules.AdmitMember(x.node_id, x.vote_key, x.peer_id, "op") for x in ts])
    rec.execute([rules.Configure(3, "op", deadline_ms=1000)])
    rec.execute([x.receive("tx_ok", 42, now=0) for x in ts[:4]])  # consensus on 42 (t=3), 4th is late
    rec.execute([rules.StartSubmission("tx_ok", "sub-1", 7)])
    rec.execute([rules.RecordSigned("tx_ok", 7, 31337, "0xsender", 0, "0xhash", "0x01")])
    rec.execute([rules.RecordBroadcast("tx_ok", 7, "0xhash"), rules.RecordConfirmed("tx_ok", 7, "0xhash", 12)])
    rec.execute([ts[0].receive("tx_min", 1), ts[1].receive("tx_min", 1), ts[4].receive("tx_min", 2),
                 ts[2].receive("tx_min", 1)])  # minority by node-5
    rec.execute([ts[0].receive("tx_dbl", 5), ts[0].receive("tx_dbl", 6)])  # double vote by node-1
    forged = ts[3].forge("node-2", "tx_forge", 1, now=5)
    rec.execute([ts[1].receive("tx_forge", 1, now=5), forged])  # node-4's peer forges in node-2's name
    rec.execute([rules.CheckDeadline("tx_forge", 10_000), rules.CheckDeadline("tx_ok", 10_000)])
    return rec


@pytest.fixture
def log(database):
    rec = scenario(database)
    yield rec
    rec.store.close()


def test_projection_tables_hold_the_story(database, log):
    p = Projector(database.app_dsn)
    p.catch_up()
    p.close()
    with psycopg.connect(database.app_dsn) as c:
        status = dict(c.execute("SELECT tx_id, status FROM tx_state"))
        assert status == {"tx_ok": "CONFIRMED", "tx_min": "ABORTED_BYZANTINE", "tx_dbl": "ABORTED_BYZANTINE",
                          "tx_forge": "ABORTED_NO_QUORUM"}  # 3 banned: 2 left < t
        violations = sorted(c.execute("SELECT violation_type, node_id, tx_id FROM byzantine_violations "
                                      "WHERE violation_type <> 'SILENT_FAILURE'"))
        assert violations == [("DOUBLE_VOTING", "node-1", "tx_dbl"), ("INVALID_SIGNATURE", "node-4", "tx_forge"),
                              ("MINORITY_VOTE", "node-5", "tx_min")]
        banned = sorted(r[0] for r in c.execute("SELECT node_id FROM members WHERE banned"))
        assert banned == ["node-1", "node-4", "node-5"]
        sub = c.execute("SELECT state, nonce, block_number, value FROM blockchain_submissions").fetchall()
        assert sub == [("CONFIRMED", 0, 12, 42)]
        counts = dict(c.execute("SELECT value, count FROM vote_counts WHERE tx_id = 'tx_ok'"))
        assert counts == {42: 4}
        rep = dict(c.execute("SELECT node_id, reputation_score FROM node_reputation"))
        assert rep["node-5"] == 0.0 and rep["node-2"] == 1.0


def test_replay_equals_live_row_for_row(database, log):
    p = Projector(database.app_dsn)
    p.catch_up(until=20)  # live is part-way: replay brings it to the same position first
    p.close()
    report = replay(database.owner_dsn)
    assert report.equal, report.differing_tables
    assert report.events == log.store.last_position()


def test_projection_survives_a_crash_mid_batch(database, log):
    p = Projector(database.app_dsn)
    p.run_once(batch=7)
    whole = p.position()
    assert 0 < whole <= 7
    with pytest.raises(RuntimeError), p.conn.transaction():  # a crash inside the next batch...
        p.conn.execute("INSERT INTO projector_tracking VALUES ('main', 999) ON CONFLICT (name) DO UPDATE "
                       "SET position = 999")
        raise RuntimeError("kill -9")
    assert p.position() == whole  # ...leaves the position where the last whole batch put it
    p.catch_up()
    p.close()
    with psycopg.connect(database.owner_dsn) as c:
        live = digest(c)
    assert replay(database.owner_dsn).replay_digest == live


def test_audit_verifies_a_clean_log(database, log):
    report = verify(log.store)
    assert report.ok, (report.integrity, report.evidence)
    assert report.events == log.store.last_position()


def test_audit_names_the_first_tampered_event(database, log):
    with psycopg.connect(database.owner_dsn) as c:  # a superuser, with the trigger disabled
        c.execute("SET session_replication_role = replica")
        c.execute("UPDATE events SET payload = jsonb_set(payload, '{value}', '43') WHERE position = 9")
    report = verify(PostgresStore(database.app_dsn))
    found = {f.position: f.problem for f in report.integrity}
    assert "edited after it was written (content" in found[9]
    assert report.first_problem.position >= 8  # the edited row's unit, and every decision that followed from it
    assert len(report.integrity + report.evidence) > 1  # every bad row is named, not only the first


def test_audit_names_a_deleted_event(database, log):
    with psycopg.connect(database.owner_dsn) as c:
        c.execute("SET session_replication_role = replica")
        c.execute("DELETE FROM events WHERE position = 12")
    report = verify(PostgresStore(database.app_dsn))
    assert any(f.position == 12 and "missing" in f.problem for f in report.integrity), report.integrity
    assert report.first_problem.position >= 11  # its batch's signature went with it


def test_audit_catches_a_false_event_written_by_a_node(database, log):
    """R13: a trustee that signs a vote nobody signed into the log is caught by any auditor, and its entry is void."""
    ts = trustees(5)
    real = ts[2].vote("tx_fake", 9)
    fake_vote = {**real.to_json(), "value": 10}  # the signature was made for 9
    opened = {"tx_id": "tx_fake", "opened_at_ms": 1, "deadline_at_ms": 1001}
    vote = {"tx_id": "tx_fake", "node_id": "node-3", "value": 10, "vote": fake_vote, "author_peer": ts[2].peer_id}
    unit = Unit({"cluster": log.store.stream_versions(["cluster"])["cluster"], "tx:tx_fake": 0}, (
        NewEvent("tx:tx_fake", "TransactionOpened", 1, opened, "open:tx_fake",
                 command=b'{"author_peer":"%s","now_ms":1,"type":"ReceiveVote"}' % ts[2].peer_id.encode()),
        NewEvent("tx:tx_fake", "VoteAccepted", 1, vote, "vote:tx_fake:node-3:10")))
    log.store.append([unit], ts[1].signer)  # node-2 is a member: its own key signs this
    report = verify(log.store)
    assert not report.integrity
    bad = report.evidence
    assert {f.position for f in bad} == {log.store.last_position() - 1, log.store.last_position()}
    assert all("written as 'node-2'" in f.problem and "ReceiveVote refused" in f.problem for f in bad), bad


def test_retention_is_an_event_so_replay_archives_the_same_rows(database, log):
    import time as _time

    later = int(_time.time() * 1000) + 100 * 86_400_000  # as if a hundred days had passed
    r = log.execute([rules.ApplyRetention(later, "alice")])
    assert r[0].events[0].TYPE == "RetentionApplied"
    p = Projector(database.app_dsn)
    p.catch_up()
    p.close()
    with psycopg.connect(database.app_dsn) as c:
        assert c.execute("SELECT count(*) FROM vote_history").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM vote_history_archive").fetchone()[0] > 0
        assert c.execute("SELECT count(*) FROM blockchain_submissions").fetchone()[0] == 0
        assert c.execute("SELECT tx_id FROM blockchain_submissions_archive").fetchall() == [("tx_ok",)]
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == log.store.last_position()  # log intact
    ts = trustees(5)
    log.execute([ts[1].receive("tx_after", 5, now=1)])  # new rows keep flowing after an archive
    report = replay(database.owner_dsn)
    assert report.equal, report.differing_tables
    assert verify(log.store).ok


def test_bans_show_the_cause_of_the_current_ban(database, log):
    """R14 item 6: `tvote bans list` shows the violation behind the *current* ban, not the member's first."""
    from tvote.report import current_bans

    def project() -> None:
        p = Projector(database.app_dsn)
        p.catch_up()
        p.close()

    project()
    assert {(b.node_id, b.reason, b.tx_id) for b in current_bans(database.app_dsn)} == {
        ("node-1", "DOUBLE_VOTING", "tx_dbl"), ("node-4", "INVALID_SIGNATURE", "tx_forge"),
        ("node-5", "MINORITY_VOTE", "tx_min")}
    ts = trustees(5)
    log.execute([rules.Unban("node-5", "op", "cleared")])
    log.execute([ts[4].receive("tx_again", 1), ts[4].receive("tx_again", 2)])  # node-5 equivocates this time
    project()
    again = {b.node_id: b for b in current_bans(database.app_dsn)}["node-5"]
    assert (again.reason, again.tx_id) == ("DOUBLE_VOTING", "tx_again")
    assert again.evidence["first"]["value"] == 1 and again.evidence["second"]["value"] == 2


def test_a_floor_ban_shows_the_reputation_history_behind_it(database):
    """Opted in (floor_ban_after), a ban for silence shows the consensus transactions the member missed."""
    from tvote.report import current_bans

    ts = trustees(3)
    rec = Writers(PostgresStore(database.app_dsn), voter=ts[0])
    rec.execute(admin(ts, 2, deadline_ms=1000, reputation_floor=850, floor_ban_after=2)[1:])
    for k in range(2):  # node-3 is silent on two consensus transactions in a row
        rec.execute([ts[0].receive(f"t{k}", 1, now=0), ts[1].receive(f"t{k}", 1, now=0),
                     rules.CheckDeadline(f"t{k}", 5000)])
    Projector(database.app_dsn).catch_up()
    (ban,) = current_bans(database.app_dsn)
    assert (ban.node_id, ban.reason) == ("node-3", "REPUTATION_FLOOR")
    assert [score for score, _ in ban.history] == [900, 800]
    rec.close()


def test_a_projector_restarts_from_its_snapshot_and_still_equals_a_replay(database, log, monkeypatch):
    """Bounded restart time: the live projector's follower starts from its snapshot, not from position 0."""
    from projections import projector as pj

    monkeypatch.setattr(pj, "SNAPSHOT_EVERY", 5)
    p = Projector(database.app_dsn)
    p.catch_up(batch=4)
    p.close()
    with psycopg.connect(database.owner_dsn) as c:
        (n, at) = c.execute("SELECT count(*), max(position) FROM snapshots WHERE owner = 'projector:main'").fetchone()
    assert n == 2 and at > 5  # the newest two are kept
    ts = trustees(5)
    log.execute([ts[1].receive("later", 3, now=1), ts[2].receive("later", 3, now=1)])
    q = Projector(database.app_dsn)
    reads: list[int] = []
    monkeypatch.setattr(pj, "read_after", lambda cur, after, limit: _read(cur, after, limit, reads))
    q.catch_up()
    q.close()
    assert min(reads) >= at  # it never read the log from 0 again
    report = replay(database.owner_dsn)
    assert report.equal, report.differing_tables


def _read(cur, after, limit, reads):
    from events.postgres_store import read_after

    reads.append(after)
    return read_after(cur, after, limit)


def test_a_withdrawn_silence_stays_in_the_table_marked_withdrawn(database):
    """R9: node-3's vote, signed before the deadline, reached the log after it: its silence is withdrawn."""
    ts = trustees(3)
    rec = Writers(PostgresStore(database.app_dsn), voter=ts[0])
    rec.execute(admin(ts, 2, deadline_ms=1000, silent_penalty=100)[1:])
    rec.execute([ts[0].receive("t", 1, now=0), ts[1].receive("t", 1, now=0), rules.CheckDeadline("t", 5000)])
    p = Projector(database.app_dsn)
    p.catch_up()
    with psycopg.connect(database.app_dsn) as c:
        assert c.execute("SELECT node_id, withdrawn_at FROM byzantine_violations").fetchall() == [("node-3", None)]
        assert c.execute("SELECT violations_count FROM node_reputation WHERE node_id = 'node-3'").fetchone() == (1,)
    rec.execute([ts[2].receive("t", 1, now=60_000, ts=999)])  # signed at 999 < the deadline at 1000
    p.catch_up()
    p.close()
    with psycopg.connect(database.app_dsn) as c:
        (withdrawn,) = c.execute("SELECT withdrawn_at FROM byzantine_violations WHERE node_id = 'node-3'").fetchone()
        assert withdrawn is not None
        assert c.execute("SELECT violations_count, reputation_score FROM node_reputation "
                         "WHERE node_id = 'node-3'").fetchone() == (0, 1.0)
    report = replay(database.owner_dsn)
    assert report.equal, report.differing_tables
    assert not verify(PostgresStore(database.app_dsn)).evidence
    rec.close()
