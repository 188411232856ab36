"""The invariant checker must catch what it claims to catch (a checker that never fails proves nothing).

A log written through the real Recorder (no node processes), then fed wrong inputs: an acknowledged
vote that is not in the log, a node view that disagrees, an honest member banned for a Byzantine
violation, an offered transaction that never reached the log, a chain with a second write.
"""

from __future__ import annotations

from dataclasses import dataclass

from helpers import Writers, admin, trustees

from chaos.invariants import Ack, check, tx_view_of
from events import rules
from events.postgres_store import PostgresStore
from recording.etcd_guard import EtcdGuard


@dataclass
class FakeRecord:
    tx_id: str


class FakeChain:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def recorded_events(self, tx_id: str | None = None, *, from_block: int = 0) -> list[FakeRecord]:
        return [FakeRecord(i) for i in self.ids]


def _log(database, etcd_server, etcd_prefix):
    ts = trustees(4)
    rec = Writers(PostgresStore(database.app_dsn), voter=ts[1],
                  guard=lambda w: EtcdGuard(etcd_server.endpoints[0], etcd_prefix, w.replace(":", "-")))
    rec.execute([rules.AdmitMember(t.node_id, t.vote_key, t.peer_id, "op") for t in ts])
    rec.execute([rules.Configure(3, "op", deadline_ms=600_000)])
    rec.execute([t.receive("tx_ok", 7, now=1000) for t in ts[:3]])  # consensus
    rec.execute([ts[0].receive("tx_bad", 1, now=1000), ts[0].receive("tx_bad", 2, now=1000)])  # node-1 equivocates
    return rec, ts


def test_checker_passes_a_sound_log_and_names_each_violation(database, etcd_server, etcd_prefix):
    rec, _ = _log(database, etcd_server, etcd_prefix)
    try:
        truth = rec.ledger.txs
        good_views = {"node-2": {"tx_ok": tx_view_of(truth["tx_ok"]) | {"deadline_at_ms": 1}}}
        ok = check(database.app_dsn, database.owner_dsn, views=good_views, byzantine={"node-1"},
                   acked=[Ack("tx_ok", "node-2", 7)], offered=["tx_ok", "tx_bad"],
                   chain=FakeChain(["tx_ok"]), submitter=False)
        held = {c.name: c.ok for c in ok.checks}
        assert held == {"log_verifies": True, "agreement": True, "only_the_guilty": True,
                        "acked_votes_logged": True, "final_states": True, "projection_matches_log": True,
                        "replay_digest": True, "chain_exactly_once": True}, ok.as_dict()
        assert ok.statuses == {"THRESHOLD_REACHED": 1, "ABORTED_BYZANTINE": 1}

        bad_views = {"node-2": {"tx_ok": {"status": "COLLECTING", "value": None, "votes": {}}}}
        bad = check(database.app_dsn, None, views=bad_views, byzantine=set(),  # node-1 counted honest
                    acked=[Ack("tx_ok", "node-4", 7)], offered=["tx_ok", "tx_never"],
                    chain=FakeChain(["tx_ok", "tx_ok", "tx_bad"]))
        failed = {c.name for c in bad.failed}
        assert failed == {"agreement", "only_the_guilty", "acked_votes_logged", "final_states",
                          "chain_exactly_once"}, bad.as_dict()
        assert bad.votes_lost == 1 and bad.txs_lost == 1
        bad.print("deliberately broken inputs")  # the table renders
    finally:
        rec.close()


def test_only_the_guilty_has_no_exemption_for_floor_bans(database, etcd_server, etcd_prefix):
    """The old checker listed floor bans of honest members apart; R14 counts every ban of an honest member."""
    ts = trustees(3)
    rec = Writers(PostgresStore(database.app_dsn), voter=ts[0],
                  guard=lambda w: EtcdGuard(etcd_server.endpoints[0], etcd_prefix, w.replace(":", "-")))
    try:
        rec.execute(admin(ts, 2, deadline_ms=1000, reputation_floor=950, floor_ban_after=1)[1:])
        rec.execute([ts[0].receive("t1", 1, now=0), ts[1].receive("t1", 1, now=0), rules.CheckDeadline("t1", 5000)])
        rep = check(database.app_dsn, views={}, byzantine=set())
        guilty = next(c for c in rep.checks if c.name == "only_the_guilty")
        assert not guilty.ok and guilty.problems == ["honest node-3 banned for REPUTATION_FLOOR"]
        assert check(database.app_dsn, views={}, byzantine={"node-3"}).ok  # were it Byzantine, that is allowed
    finally:
        rec.close()
