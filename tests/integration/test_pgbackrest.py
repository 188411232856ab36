"""pgBackRest mode (issue 17, item 4): full backup + archived WAL, restore to a log position, and its bad input.

One Postgres of its own with WAL archiving on (devstack's ``settings``), a migrated database with the
seed's scenarios, one full backup, then more appends after it. Each test appends its own events, so
the order of the tests does not matter. Real pgBackRest 2.45 and Postgres 15; nothing faked.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from helpers import Writers, trustees
from services import Database

from devstack.postgres import Postgres
from events.postgres_store import PostgresStore
from integration.test_projections import scenario
from projections.replay import replay_digest_upto
from tvote import db
from tvote.backup import TargetNotEmpty
from tvote.pgbackrest import (
    ArchivingOff,
    PastArchivedWal,
    PositionNotRestorable,
    Stanza,
    StanzaError,
    archive_settings,
    backup,
    restore_to_position,
    stop,
    switch_wal,
)

pytestmark = pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest not installed (./dev bootstrap)")
TVOTE = [sys.executable, "-c", "from tvote.cli import app; app()"]
_tx = itertools.count()


def _reachable_tmp() -> Path:
    """A directory the postgres user can reach (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="tvote-pgbr-"))
    base.chmod(0o755)
    return base


@pytest.fixture(scope="module")
def archived():
    """(server, database, stanza, backup report, base dir): archiving on, the seed's log, one full backup."""
    base = _reachable_tmp()
    stanza = Stanza("drill", base / "repo")
    data = base / "pg" / "data"
    pg = Postgres(data, fsync=False, settings=archive_settings(stanza, data)).start()
    try:
        pg.create_database("tv")
        db.upgrade(pg.url("tv"))
        database = Database(pg, "tv")
        scenario(database).store.close()
        report = backup(database.owner_dsn, stanza)
        yield pg, database, stanza, report, base
    finally:
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


def append(database: Database, batches: int = 1) -> list[int]:
    """``batches`` transactions of 4 votes each (one append each); returns each one's last position."""
    ts = trustees(5)
    rec = Writers(PostgresStore(database.app_dsn), voter=ts[2])
    ends = []
    try:
        for _ in range(batches):
            rec.execute([x.receive(f"tx_pitr_{next(_tx)}", 3) for x in ts[:4]])
            with psycopg.connect(database.owner_dsn) as c:
                ends.append(c.execute("SELECT max(position) FROM events").fetchone()[0])
    finally:
        rec.store.close()
    return ends


def log_end(database: Database) -> int:
    with psycopg.connect(database.owner_dsn) as c:
        return c.execute("SELECT max(position) FROM events").fetchone()[0]


def test_backup_archives_and_reports(archived):
    _pg, database, stanza, report, _ = archived
    assert report.log_start == report.log_end == log_end(database) or report.log_end <= log_end(database)
    assert report.label.endswith("F") and report.database_size > 0 and 0 < report.repo_size < report.database_size
    assert report.archive_min <= report.wal_start <= report.wal_stop <= report.archive_max
    with psycopg.connect(database.owner_dsn) as c:
        assert c.execute("SHOW archive_mode").fetchone()[0] == "on"
        assert "archive-push" in c.execute("SHOW archive_command").fetchone()[0]
    append(database)  # archiving goes on after the backup: a switched segment reaches the repository
    assert switch_wal(database.owner_dsn, stanza) > report.wal_stop


def test_restore_to_a_position_in_the_middle_proves_the_log(archived):
    _pg, database, stanza, report, base = archived
    ends = append(database, 3)
    switch_wal(database.owner_dsn, stanza)
    target = base / "restored-middle"
    r = restore_to_position(database.owner_dsn, stanza, ends[1], target)
    assert r.ok, r.problems
    assert (r.target_type, r.backup_label) == ("xid", report.label)
    assert r.log_position == ends[1] < log_end(database)  # stopped right after that commit, not at the end
    assert r.last_event_hash == r.source_hash and r.audit_ok and r.audit_events == ends[1]
    assert r.replay_digest == r.live_digest == r.source_digest
    assert not (target / "postmaster.pid").exists()  # stopped after the proof; the copy stays on disk
    shutil.rmtree(target)


def test_restore_to_the_backup_end_uses_the_backup_alone(archived):
    _pg, database, stanza, report, base = archived
    assert report.log_start == report.log_end  # nothing appended while it ran
    r = restore_to_position(database.owner_dsn, stanza, report.log_end, base / "restored-at-backup")
    assert r.ok, r.problems
    assert (r.target_type, r.log_position) == ("immediate", report.log_end)
    shutil.rmtree(base / "restored-at-backup")


def test_cli_backup_and_restore_to_the_end_with_switch_wal(archived):
    _pg, database, stanza, _report, base = archived
    out = subprocess.run([*TVOTE, "backup", "--pgbackrest", "--repo", str(stanza.repo), "--stanza", stanza.name,
                          "--dsn", database.owner_dsn], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "full backup" in out.stdout and "WAL archiving goes on" in out.stdout
    end = append(database, 2)[-1]
    target = base / "restored-cli"
    out = subprocess.run([*TVOTE, "restore", "--pgbackrest", "--repo", str(stanza.repo), "--stanza", stanza.name,
                          "--dsn", database.owner_dsn, "--position", str(end), "--target-dir", str(target),
                          "--switch-wal"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"log ends at {end}" in out.stdout and "audit OK" in out.stdout and "proved" in out.stdout
    shutil.rmtree(target)


# --------------------------------------------------------------------------------------------- bad input


def _one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines and lines[0].startswith("error:")
    return out.stdout


def test_target_not_empty_is_refused_and_left_alone(archived):
    _pg, database, stanza, report, base = archived
    target = base / "busy"
    target.mkdir()
    (target / "precious.txt").write_text("mine")
    with pytest.raises(TargetNotEmpty, match="is not empty"):
        restore_to_position(database.owner_dsn, stanza, report.log_end, target)
    assert [p.name for p in target.iterdir()] == ["precious.txt"] and (target / "precious.txt").read_text() == "mine"
    out = subprocess.run([*TVOTE, "restore", "--pgbackrest", "--repo", str(stanza.repo), "--stanza", stanza.name,
                          "--dsn", database.owner_dsn, "--position", str(report.log_end), "--target-dir", str(target)],
                         capture_output=True, text=True, timeout=60)
    assert "is not empty" in _one_line_error(out)
    assert [p.name for p in target.iterdir()] == ["precious.txt"]


def test_position_past_the_log_end_is_refused(archived):
    _pg, database, stanza, _report, base = archived
    end = log_end(database)
    with pytest.raises(PositionNotRestorable, match=f"past the log's end \\({end}\\)"):
        restore_to_position(database.owner_dsn, stanza, end + 1, base / "never")
    with pytest.raises(PositionNotRestorable, match="start at 1"):
        restore_to_position(database.owner_dsn, stanza, 0, base / "never")
    assert not (base / "never").exists()


def test_position_inside_a_batch_is_refused_with_the_nearest_ones(archived):
    _pg, database, stanza, _report, base = archived
    end = append(database)[0]  # four votes (and what they decide) in one transaction
    with psycopg.connect(database.owner_dsn) as c:
        first = c.execute("SELECT min(position) FROM events WHERE xmin = (SELECT xmin FROM events WHERE position = %s)",
                          (end,)).fetchone()[0]
    assert first < end
    with pytest.raises(PositionNotRestorable, match=f"appended {first}..{end}: .*choose {first - 1} or {end}"):
        restore_to_position(database.owner_dsn, stanza, end - 1, base / "never")
    assert not (base / "never").exists()


def test_position_before_every_backup_is_refused(archived):
    _pg, database, stanza, report, base = archived
    with psycopg.connect(database.owner_dsn) as c:  # the end of an earlier transaction of the seed's log
        early = c.execute("SELECT max(position) FROM events WHERE xmin = (SELECT xmin FROM events WHERE position = 1)"
                          ).fetchone()[0]
    assert early < report.log_start
    with pytest.raises(PositionNotRestorable, match="not after any backup's end"):
        restore_to_position(database.owner_dsn, stanza, early, base / "never")
    assert not (base / "never").exists()


def test_position_past_the_archived_wal_fails_and_empties_the_target(archived):
    _pg, database, stanza, _report, base = archived
    switch_wal(database.owner_dsn, stanza)
    end = append(database)[0]  # committed, but its WAL segment is not full and not switched: not archived
    target = base / "unarchived"
    target.mkdir(mode=0o750)
    given = target.stat()
    with pytest.raises(PastArchivedWal, match="archived WAL ends before that position's commit"):
        restore_to_position(database.owner_dsn, stanza, end, target)
    assert target.is_dir() and not any(target.iterdir())  # as given: empty, same owner and mode
    assert (target.stat().st_uid, target.stat().st_mode) == (given.st_uid, given.st_mode)
    assert subprocess.run(["pgrep", "-f", "--", f"-D {target}"], capture_output=True).returncode == 1  # no server left


def test_missing_repo_or_stanza_is_refused(archived):
    _pg, database, stanza, report, base = archived
    for bad, match in ((Stanza(stanza.name, base / "no-such-repo"), "does not exist"),
                       (Stanza("nosuch", stanza.repo), "stanza nosuch")):
        with pytest.raises(StanzaError, match=match):
            restore_to_position(database.owner_dsn, bad, report.log_end, base / "never")
        assert not (base / "never").exists()
    assert not (base / "no-such-repo").exists()
    out = subprocess.run([*TVOTE, "restore", "--pgbackrest", "--repo", str(base / "no-such-repo"), "--dsn",
                          database.owner_dsn, "--position", "1", "--target-dir", str(base / "never")],
                         capture_output=True, text=True, timeout=60)
    assert "does not exist" in _one_line_error(out)


def test_backup_of_a_server_without_archiving_sets_it_and_asks_for_a_restart():
    """The operator's first run on a server without archiving: set for the next start, then a restart and it works."""
    base = _reachable_tmp()
    stanza = Stanza("fresh", base / "repo")
    pg = Postgres(base / "pg" / "data", fsync=False).start()
    try:
        pg.create_database("tv")
        db.upgrade(pg.url("tv"))
        with pytest.raises(ArchivingOff, match="restart that server"):
            backup(pg.dsn("tv"), stanza)
        with psycopg.connect(pg.dsn("tv")) as c:
            assert c.execute("SHOW archive_mode").fetchone()[0] == "off"  # only after the restart
        pg.stop()
        pg.start()
        r = backup(pg.dsn("tv"), stanza)
        assert r.log_start == r.log_end == 0 and r.repo_size > 0
    finally:
        pg.destroy()
        stop(base / "pg" / "data")
        shutil.rmtree(base, ignore_errors=True)


def test_restore_without_the_source_reads_the_archive(archived):
    """The source is lost: the position's transaction and the digest come from a copy at the archive's end."""
    _pg, database, stanza, _report, base = archived
    ends = append(database, 2)
    switch_wal(database.owner_dsn, stanza)
    expected = replay_digest_upto(database.owner_dsn, ends[0])
    target = base / "restored-no-source"
    r = restore_to_position(None, stanza, ends[0], target, dbname=database.name)
    assert r.ok, r.problems
    assert r.seconds_probe > 0 and r.target_type == "xid" and r.log_position == ends[0]
    assert r.replay_digest == r.source_digest == expected  # the archive's log up to P is the source's
    shutil.rmtree(target)
    out = subprocess.run([*TVOTE, "restore", "--pgbackrest", "--repo", str(stanza.repo), "--stanza", stanza.name,
                          "--dbname", database.name, "--position", str(ends[1] + 1), "--target-dir", str(target)],
                         capture_output=True, text=True, timeout=120)
    assert "past the archived log's end" in _one_line_error(out)
    assert not target.exists()  # the probe was removed
