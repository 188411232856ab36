"""pgBackRest mode figures (issue 17 item 4): a full backup, then restores to a log position, through the CLI.

Prints each command with its output and wall time; asserts nothing but the exit codes. A private Postgres
with fsync on and WAL archiving into a fresh repository; the seed's scenarios, ``--batches`` transactions
of four votes, ``tvote backup --pgbackrest``, ``--batches`` more, then ``tvote restore --pgbackrest`` to the
end of the transaction halfway between the backup and the log's end, with the source (``--switch-wal``) and without
it (the probe). Run: ``.venv/bin/python bench/pgbackrest_bench.py --batches 1000``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import psycopg  # noqa: E402
from helpers import trustees  # noqa: E402
from integration.test_projections import scenario  # noqa: E402
from services import Database  # noqa: E402

from devstack.postgres import Postgres  # noqa: E402
from tvote import db  # noqa: E402
from tvote.pgbackrest import Stanza, archive_settings  # noqa: E402

TVOTE = [sys.executable, "-c", "from tvote.cli import app; app()"]


def tvote(*args: str) -> None:
    t0 = time.perf_counter()
    out = subprocess.run([*TVOTE, *args], capture_output=True, text=True, env={"COLUMNS": "200", **_env()})
    print(f"$ tvote {' '.join(args)}\n{out.stdout.strip()}\n  [{time.perf_counter() - t0:.1f}s wall, exit "
          f"{out.returncode}]", flush=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])


def _env() -> dict[str, str]:
    import os

    return dict(os.environ, PYTHONPATH=str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=1000, help="transactions of four votes, before and after")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="tvote-pgbr-bench-"))
    base.chmod(0o755)  # the postgres user reaches it
    stanza = Stanza("tvote", base / "repo")
    data = base / "pg" / "data"
    pg = Postgres(data, fsync=True, settings=archive_settings(stanza, data)).start()
    rec = None
    try:
        pg.create_database("tvote")
        db.upgrade(pg.url("tvote"))
        database = Database(pg, "tvote")
        rec = scenario(database)
        ts = trustees(5)

        def batches(tag: str) -> None:
            for i in range(args.batches):
                rec.execute([x.receive(f"tx_{tag}_{i}", 3) for x in ts[:4]])

        batches("a")
        with psycopg.connect(database.owner_dsn) as c:
            at_backup = c.execute("SELECT max(position) FROM events").fetchone()[0]
        tvote("backup", "--pgbackrest", "--repo", str(stanza.repo), "--dsn", database.owner_dsn)
        batches("b")
        with psycopg.connect(database.owner_dsn) as c:
            end = c.execute("SELECT max(position) FROM events").fetchone()[0]
            target = c.execute("SELECT max(position) FROM events WHERE xmin = (SELECT xmin FROM events WHERE "
                               "position = %s)", ((at_backup + end) // 2,)).fetchone()[0]
        print(f"log end {end}, restoring to {target}", flush=True)
        common = ["restore", "--pgbackrest", "--repo", str(stanza.repo), "--position", str(target)]
        tvote(*common, "--dsn", database.owner_dsn, "--target-dir", str(base / "r1"), "--switch-wal")
        tvote(*common, "--dbname", "tvote", "--target-dir", str(base / "r2"))
        print(subprocess.run(["du", "-sh", str(stanza.repo), str(data), str(base / "r1")], capture_output=True,
                             text=True).stdout)
    finally:
        if rec is not None:
            rec.store.close()
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
