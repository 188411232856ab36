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
