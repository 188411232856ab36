"""The projection schema admits every status and violation kind of events/vocab.py (and nothing else).

A kind missing from a CHECK constraint would stop the projector at its first row of that kind.
"""

import psycopg
import pytest

from events.vocab import TxStatus, ViolationKind

pytestmark = pytest.mark.integration


def allowed(dsn: str, table: str, column: str) -> set[str]:
    with psycopg.connect(dsn) as c:
        (definition,) = c.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c' "
            "AND pg_get_constraintdef(oid) LIKE %s", (table, f"%{column}%")).fetchone()
    return {part.split("'")[1] for part in definition.split("ARRAY[")[1].split(",")}


def test_check_constraints_are_the_vocabulary(database):
    assert allowed(database.owner_dsn, "tx_state", "status") == {s.value for s in TxStatus}
    assert allowed(database.owner_dsn, "byzantine_violations", "violation_type") == {k.value for k in ViolationKind}
