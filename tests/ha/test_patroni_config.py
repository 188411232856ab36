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
