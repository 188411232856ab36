from guard_contract import GuardContract

from recording.memory_guard import MemoryGuard, MemoryKeys


class TestMemoryGuard(GuardContract):
    def make_guards(self, n: int) -> list[MemoryGuard]:
        keys = MemoryKeys()
        return [MemoryGuard(f"node-{i}", keys) for i in range(1, n + 1)]

    def expire(self, guard: MemoryGuard) -> None:
        guard.keys.expire(guard.node_id)
