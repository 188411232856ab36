import pytest
from store_contract import StoreContract

from events.postgres_store import PostgresStore


class TestPostgresStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _db(self, database):
        self.dsn = database.app_dsn  # the service role: SELECT and INSERT only
        self.opened = []
        yield
        for s in self.opened:
            s.close()

    def make_store(self):
        s = PostgresStore(self.dsn)
        self.opened.append(s)
        return s
