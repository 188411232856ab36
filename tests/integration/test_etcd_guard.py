import pytest
from guard_contract import GuardContract

from recording.etcd_guard import EtcdGuard

pytestmark = pytest.mark.integration


class TestEtcdGuard(GuardContract):
    @pytest.fixture(autouse=True)
    def _servers(self, etcd_server, etcd_prefix):
        self.endpoint, self.prefix, self.open = etcd_server.endpoints[0], etcd_prefix, []
        yield
        for g in self.open:
            g.close()

    def make_guards(self, n: int) -> list[EtcdGuard]:
        guards = [EtcdGuard(self.endpoint, self.prefix, f"node-{i}") for i in range(1, n + 1)]
        self.open += guards
        return guards

    def expire(self, guard: EtcdGuard) -> None:
        guard.lease.revoke()  # what a lapsed lease does, at once


def test_claims_lapse_after_the_claim_lease_rotates_and_stay_ours_until_then(etcd_server, etcd_prefix):
    """Running for months: a live writer's claims must not stay in etcd for ever (one key per vote).

    After a rotation the old lease is no longer refreshed: its claims and writer marks lapse ``lease_ttl``
    later and the vote is free to claim again (the idempotency key keeps a second append single); until
    then a claim under the previous lease is still ours to release.
    """
    import time

    from guard_contract import claim

    ep = etcd_server.endpoints[0]
    a = EtcdGuard(ep, etcd_prefix, "node-1", lease_ttl=2, rotate_s=3600)
    b = EtcdGuard(ep, etcd_prefix, "node-2", lease_ttl=2, rotate_s=3600)
    try:
        assert a.claim([claim({"tx:a": 0}, {"tx:a": 1}, {"a/n1": "v"})]) is None
        a._rotate()  # what the keep-alive does every rotate_s
        r = a.claim([claim({"tx:a": 1}, {}, {"a/n1": "v"})])
        assert r is not None and r.votes["a/n1"][2] is True  # claimed under our previous lease: ours
        assert a.claim([claim({"tx:b": 0}, {"tx:b": 1}, {"b/n1": "v"})]) is None  # new claims, new lease
        deadline = time.monotonic() + 15
        while a.head_writer("tx:a") is not None or b.claim([claim({"tx:a": 0}, {}, {"a/n1": "v"})]) is not None:
            assert time.monotonic() < deadline, "the old lease's claims did not lapse"
            time.sleep(0.2)
        r = b.claim([claim({"tx:b": 1}, {}, {"b/n1": "v"})])
        assert r is not None and r.votes["b/n1"][2] is False  # the new lease's claim stays, and is a's
        assert a.head_writer("tx:b") == "node-1" and a.head("tx:b") == 1
        # heads and counters lapse with the lease they were put under (Postgres decides; a claim on a
        # missing head repairs it from the log): etcd holds ~40 s of traffic, not a day of it
        assert a.head("tx:a") is None
    finally:
        a.close()
        b.close()


def test_the_keep_alive_rotates_the_claim_lease(etcd_server, etcd_prefix):
    import time

    from guard_contract import claim

    a = EtcdGuard(etcd_server.endpoints[0], etcd_prefix, "node-1", lease_ttl=2, rotate_s=1.0)
    try:
        first = a.lease.id
        assert a.claim([claim({"tx:r": 0}, {"tx:r": 1}, {"r/n1": "v"})]) is None
        deadline = time.monotonic() + 15
        while a.lease.id == first or a.head_writer("tx:r") is not None:
            assert time.monotonic() < deadline, "no rotation, or the old claims stayed"
            time.sleep(0.2)
    finally:
        a.close()
