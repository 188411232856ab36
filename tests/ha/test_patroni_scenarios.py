"""The other failovers of issue 17 under an append load: a planned switchover, a standby lost, the primary frozen.

Each checks what the kill -9 test checks (every acknowledged vote in the log once, gap-free, audit clean)
and prints its figures: seconds without an acknowledged append, recovery time.
"""

from __future__ import annotations

import time

import pytest
from helpers import wait_for

from chaos.pg_failover import AppendLoad, check_log
from devstack.patroni import PatroniCluster

from .test_patroni_failover import rejoin, wait_acks

pytestmark = pytest.mark.integration
BOUND = 2.0  # the load's commit bound: a frozen primary's commits are given up after this


def _load(patroni, ha_database, etcd_server, etcd_prefix) -> AppendLoad:
    load = AppendLoad(ha_database.app_dsn, etcd_server.endpoints[0], etcd_prefix, commit_bound_s=BOUND)
    load.found()
    load.start()
    wait_acks(load, 10, 30)
    return load


def _held(load: AppendLoad, ha_database, fault_at: float, label: str) -> dict:
    figures = load.figures(fault_at)
    print(f"{label} figures:", figures)
    print("acks after the fault (s):", [round(b.acked_at - fault_at, 1) for b in load.acked()
                                       if -1 < b.acked_at - fault_at < 30][::20])
    check = check_log(ha_database.app_dsn, load)
    assert check.held, check
    assert figures["unexpected"] == []
    for b in load.acked():
        if b.retries:
            assert set(b.statuses) <= {"appended", "duplicate"}, b
    return figures


def test_a_planned_switchover_under_load_loses_nothing(patroni: PatroniCluster, ha_database, etcd_server,
                                                       etcd_prefix):
    old, sync = patroni.primary(), patroni.sync_standby()
    assert old is not None and sync is not None
    load = _load(patroni, ha_database, etcd_server, etcd_prefix)
    try:
        at = time.monotonic()
        new = patroni.switchover()
        wait_acks(load, len(load.acked()) + 10, 60)
    finally:
        load.stop()
    assert new is sync
    figures = _held(load, ha_database, at, "switchover")
    assert figures["seconds_without_appends"] < 30
    # the old primary is a standby now, streaming the new primary's log
    wait_for(lambda: patroni.streaming() == len(patroni.members) - 1 and patroni.sync_standby(), 60, "standbys")
    assert patroni.roles()[old.name] in ("replica", "sync_standby")


def test_the_synchronous_standby_lost_the_other_takes_over_and_appends_go_on(patroni: PatroniCluster, ha_database,
                                                                             etcd_server, etcd_prefix):
    primary, sync = patroni.primary(), patroni.sync_standby()
    assert primary is not None and sync is not None
    other = next(m for m in patroni.members if m not in (primary, sync))
    load = _load(patroni, ha_database, etcd_server, etcd_prefix)
    try:
        at = time.monotonic()
        patroni.kill_member(sync)
        wait_for(lambda: patroni.sync_standby() is other, 30, f"{other.name} synchronous")
        wait_acks(load, len(load.acked()) + 10, 30)
    finally:
        load.stop()
    assert patroni.primary() is primary  # no failover: the primary ran on
    figures = _held(load, ha_database, at, "standby lost")
    assert figures["seconds_without_appends"] < 15
    rejoin(patroni, sync, ha_database)


def test_the_primary_frozen_is_replaced_and_its_commits_are_never_acknowledged(patroni: PatroniCluster, ha_database,
                                                                               etcd_server, etcd_prefix):
    old, sync = patroni.primary(), patroni.sync_standby()
    assert old is not None and sync is not None
    load = _load(patroni, ha_database, etcd_server, etcd_prefix)
    try:
        at = time.monotonic()
        patroni.freeze_member(old)
        try:
            new = patroni.wait_primary(60, other_than=old)
            wait_acks(load, len(load.acked()) + 10, 60)
        finally:
            patroni.thaw_member(old)
    finally:
        load.stop()
    assert new is sync
    # Thawed, the old primary takes writes until its Patroni sees it was replaced (a window the multi-host DSN
    # can land in: its commits wait for a standby it no longer has, so the bound gives them up in doubt).
    # Debian's Patroni 3.0.2 put the leader key back to it unconditionally (patroni/patroni#2689, fixed in 3.0.3):
    # the promoted member demoted and was rewound onto the old timeline with 33 acknowledged votes in one run
    # (docs/decisions.md); devstack runs 3.0.4, and this says so plainly if it ever happens again.
    settled = wait_for(lambda: (r := patroni.roles()).get(old.name) in ("replica", "sync_standby", "leader")
                       and sum(v == "leader" for v in r.values()) == 1 and r, 60, "one leader after the thaw")
    time.sleep(3)
    if patroni.roles().get(old.name) == "leader":
        check = check_log(patroni.member_dsn(old, ha_database.name, user="tvote_app"), load)
        pytest.fail(f"the thawed {old.name} took the leader key back ({settled}): {len(check.lost)} acknowledged "
                    f"votes missing from its log (patroni/patroni#2689: is Patroni older than 3.0.3?)")
    wait_for(lambda: patroni.primary() is new, 30, f"{new.name} the only primary")
    figures = _held(load, ha_database, at, "primary frozen")
    assert figures["retried_batches"] >= 1  # the batch in flight on the frozen primary was given up, retried
    wait_for(lambda: patroni.streaming() == len(patroni.members) - 1, 60, "standbys")
