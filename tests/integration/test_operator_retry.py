"""The operator's plans outlast a store that is not reachable yet (the netns start-up race).

``tvote up --network netns`` admitted its trustees right after etcd reported healthy from inside a
member's namespace; this host could not reach it yet, and ``up`` exited with "etcd connection
failed". A plan is derived again from the log at each try, so it is retried; a list is not.
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import OPERATOR, admin, trustees

from devstack.etcd import Etcd
from devstack.operator import operate
from events.errors import StoreUnavailable
from events.postgres_store import PostgresStore

pytestmark = pytest.mark.integration


def test_a_plan_waits_for_an_etcd_that_starts_late_and_lands_once(database, etcd_prefix, tmp_path):
    ts = trustees(3)
    late = Etcd(size=1, base_dir=tmp_path / "etcd", unsafe_tmpfs=True)  # ports chosen, not started
    plans = []

    def plan(cluster):
        plans.append(len(cluster.members))
        return [] if cluster.members else admin(ts, 2)[1:]

    starter = threading.Timer(2.0, late.start)
    starter.start()
    try:
        t0 = time.monotonic()
        operate(database.app_dsn, late.endpoints[0], etcd_prefix, OPERATOR, plan, patience_s=60)
        assert time.monotonic() - t0 >= 1.5  # it did wait for etcd
        again = operate(database.app_dsn, late.endpoints[0], etcd_prefix, OPERATOR, plan)
    finally:
        starter.join()
        late.destroy()
    assert again == []  # the second run found every member admitted
    store = PostgresStore(database.app_dsn)
    try:
        admits = [r for r in store.read_all() if r.event_type == "MemberAdmitted"]
    finally:
        store.close()
    assert len(admits) == 3  # each admitted once, however many tries it took
    assert plans[-1] == 3


def test_a_list_of_commands_is_tried_once_and_a_plan_gives_up_after_its_patience(database, etcd_prefix):
    nowhere = "http://127.0.0.1:1"
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        operate(database.app_dsn, nowhere, etcd_prefix, OPERATOR, admin(trustees(3), 2)[1:], patience_s=30)
    once = time.monotonic() - t0
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        operate(database.app_dsn, nowhere, etcd_prefix, OPERATOR, lambda cluster: [], patience_s=3)
    assert time.monotonic() - t0 >= 3 > once
