"""Where `tvote up`'s processes run (tvote.placement): loopback unchanged, bad input refused before anything."""

from __future__ import annotations

import pytest

from tvote import placement
from tvote.placement import NetworkNeedsRoot, Placement, roles


def test_loopback_places_everything_on_127_0_0_1_and_builds_nothing():
    p = Placement("loopback", 3).open()
    assert p.net is None and not p.isolated
    assert {p.ip(r) for r in roles(3)} == {"127.0.0.1"}
    assert p.ns_prefix("pg") == [] and p.hosts(["trustee-1"]) is None and p.shell() == ""
    assert all("netns" not in a for a in p.prefix("trustee-1"))
    with p.operating():
        pass
    p.close()


def test_roles_name_every_process_once():
    assert roles(2) == ["operator", "pg", "etcd0", "etcd1", "etcd2", "anvil", "trustee-1", "trustee-2", "projector",
                        "submitter"]


def test_an_unknown_network_is_refused():
    with pytest.raises(ValueError, match="--network must be one of loopback, netns"):
        Placement("wan", 3)


def test_netns_without_root_is_refused_before_anything_exists(monkeypatch):
    monkeypatch.setattr(placement.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(placement, "_start_watchdog", lambda: pytest.fail("started a watchdog"))
    p = Placement("netns", 3)
    with pytest.raises(NetworkNeedsRoot, match="needs root"):
        p.open()
    assert p.net is None
