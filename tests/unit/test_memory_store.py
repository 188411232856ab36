from store_contract import StoreContract

from events.memory_store import MemoryStore


class TestMemoryStore(StoreContract):
    def make_store(self):
        if not hasattr(self, "_shared"):
            self._shared = MemoryStore()
        # the concurrency test asks for several handles on one store
        return self._shared

    def setup_method(self):
        self._shared = MemoryStore()
