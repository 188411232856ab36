"""Bad input refused before anything starts: Patroni keys that overlap the service's, impossible timings."""

from __future__ import annotations

import glob

import psycopg
import pytest

from devstack.patroni import PatroniCluster, PrefixCollision, check_prefixes, key_root
from events.postgres_store import connect_failure

ENDPOINTS = ["http://127.0.0.1:1"]  # never reached: every case is refused first


@pytest.mark.parametrize(("namespace", "scope", "service"), [
    ("/", "tvote", "/tvote"),  # Patroni's keys would be the service's
    ("/tvote", "pg", "/tvote"),  # under the service's prefix
    ("/", "tvote-pg", "/tvote"),  # a byte-prefix range over /tvote would cover /tvote-pg/...
    ("/patroni", "tvote-pg", "/patroni"),  # the service's prefix contains Patroni's keys
    ("/patroni", "tvote-pg", "/"),  # the service owns the whole key space
    ("/patroni", "", "/tvote"),  # no scope: keys straight under the namespace
])
def test_a_patroni_key_root_that_overlaps_the_service_is_refused_and_nothing_starts(namespace, scope, service):
    before = set(glob.glob("/tmp/tvote-patroni-*"))
    with pytest.raises(PrefixCollision):
        PatroniCluster(ENDPOINTS, namespace=namespace, scope=scope, service_prefixes=(service,))
    assert set(glob.glob("/tmp/tvote-patroni-*")) == before  # no directory, no process


def test_the_default_key_root_is_beside_the_service_prefixes():
    assert key_root("/patroni", "tvote-pg") == "/patroni/tvote-pg/"
    check_prefixes("/patroni", "tvote-pg", ["/tvote", "/chaos", "/t/ab12"])  # no error


def test_timings_patroni_would_reject_are_refused():
    with pytest.raises(ValueError, match="loop_wait"):
        PatroniCluster(ENDPOINTS, ttl=4, loop_wait=1, retry_timeout=2)
    with pytest.raises(ValueError, match="standby"):
        PatroniCluster(ENDPOINTS, size=1)


def test_a_connect_failure_on_standbys_only_says_no_writable_member():
    e = psycopg.OperationalError(
        "connection failed: ... failed: session is read-only\nMultiple connection attempts failed. All failures were:\n"
        "- host: 'h', port: '1', hostaddr: 'h': connection failed: ... failed: session is read-only\n"
        "- host: 'h', port: '2', hostaddr: 'h': connection failed: ... failed: session is read-only")
    assert connect_failure(e).startswith("no writable member: all 2 server(s)")
    refused = psycopg.OperationalError("connection failed: ... failed: Connection refused")
    assert connect_failure(refused) == str(refused)  # anything else: psycopg's own words


def test_hosts_or_prefixes_not_one_per_member_are_refused_and_nothing_starts():
    before = set(glob.glob("/tmp/tvote-patroni-*"))
    with pytest.raises(ValueError, match="2 hosts for 3 members"):
        PatroniCluster(ENDPOINTS, size=3, hosts=["10.0.0.1", "10.0.0.2"])
    with pytest.raises(ValueError, match="4 prefixes for 3 members"):
        PatroniCluster(ENDPOINTS, size=3, prefixes=[["ip", "netns", "exec", f"n{i}"] for i in range(4)])
    assert set(glob.glob("/tmp/tvote-patroni-*")) == before


def test_members_on_network_hosts_listen_and_are_reached_on_their_addresses(tmp_path):
    """On a test network each member listens on (and advertises) its host's address, starts through its
    prefix and lets the subnet in; on loopback nothing changes (the same config as before the option)."""
    ips = ["10.9.0.5", "10.9.0.6", "10.9.0.7"]
    prefixes = [["ip", "netns", "exec", f"tvnet-abcdef-pg{i}"] for i in range(3)]
    net = PatroniCluster(ENDPOINTS, base_dir=tmp_path / "net", hosts=ips, prefixes=prefixes)
    m = net.members[1]
    cfg = net._config(m)
    assert cfg["postgresql"]["listen"] == cfg["postgresql"]["connect_address"] == f"10.9.0.6:{m.port}"
    assert cfg["restapi"]["listen"] == cfg["restapi"]["connect_address"] == f"10.9.0.6:{m.api_port}"
    assert "host all all samenet trust" in cfg["postgresql"]["pg_hba"]
    assert net._argv(m)[:4] == prefixes[1]
    assert net.dsn("tvote").startswith(f"host={','.join(ips)} port={','.join(str(x.port) for x in net.members)} ")
    assert net.member_dsn(m).startswith(f"host=10.9.0.6 port={m.port} ")
    assert net.local_dsn(m).startswith(f"host={m.base} port={m.port} ")  # the Unix socket: no cut reaches it
    lo = PatroniCluster(ENDPOINTS, base_dir=tmp_path / "lo")
    cfg = lo._config(lo.members[0])
    assert cfg["postgresql"]["listen"] == f"127.0.0.1:{lo.members[0].port}"
    assert cfg["postgresql"]["pg_hba"] == ["local all all trust", "host all all 127.0.0.1/32 trust",
                                           "host replication replicator 127.0.0.1/32 trust"]
    assert "netns" not in " ".join(lo._argv(lo.members[0]))  # no prefix: started as before
    assert lo.dsn().startswith("host=127.0.0.1,127.0.0.1,127.0.0.1 ")
