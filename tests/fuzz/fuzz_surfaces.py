"""Fuzz surfaces shared by the CI tests (tests/fuzz) and the bench (bench/fuzz_bench.py).

Why one module: the CI budget and the 100k bench must check *the same* properties, so each
surface is a strategy plus a ``check`` that either returns how the input was handled
("accepted" / "rejected") or raises :class:`Finding` (a crash, a state change from invalid
input, or invalid input accepted). Findings that match a bug already reported (``KNOWN``) are
labelled with its id, so CI can stay green on known bugs (unless ``FUZZ_STRICT=1``) while the
bench still counts every one of them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from helpers import W, bootstrap, run, signer, trustees
from hypothesis import strategies as st

from events import errors, model, rules
from events.memory_store import MemoryStore
from events.store import NewEvent, Recorded, Unit, plan
from events.upcast import decode as decode_event
from events.vote import SignedVote, Vote, sign
from node import wire
from recording.recorder import now_ms

HUGE = 10**5000  # an int whose repr() exceeds Python's 4300-digit limit
STRICT = os.environ.get("FUZZ_STRICT") == "1"


class Finding(Exception):
    """A property violation: ``kind`` is crash | state | accepted-invalid | hang | not-json."""

    def __init__(self, kind: str, detail: str, known: str | None = None) -> None:
        super().__init__(f"[{kind}{'/' + known if known else ''}] {detail}")
        self.kind, self.detail, self.known = kind, detail, known


# Known bugs (reported, owned by others): (id, surface, kind, regex over the detail). A finding
# that matches is labelled with the id, tolerated by CI (unless FUZZ_STRICT=1) and still counted
# by the bench. B1-B12 were fixed in f71a1bc; their reproductions are in test_fuzz_found_bugs.py.
# Example entry: ("B1-wire-json", "gossip", "crash", r"ValueError: Exceeds the limit|RecursionError").
KNOWN: list[tuple[str, str, str, str]] = []


def classify(surface: str, kind: str, detail: str) -> str | None:
    for bug, surfaces, kinds, pattern in KNOWN:
        if surface in surfaces.split("|") and kind in kinds.split("|") and re.search(pattern, detail):
            return bug
    return None


def finding(surface: str, kind: str, detail: str) -> Finding:
    return Finding(kind, detail, classify(surface, kind, detail))


def crash(surface: str, exc: BaseException, what: str = "") -> Finding:
    return finding(surface, "crash", f"{what}{type(exc).__name__}: {str(exc)[:200]}")


def enforce(f: Finding) -> None:
    """CI: fail on new findings; tolerate known ones unless FUZZ_STRICT=1."""
    if STRICT or f.known is None:
        raise AssertionError(str(f)) from f


# --- shared value pools ---------------------------------------------------------------------------

EDGE_INTS = [0, 1, -1, 2, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), 86_400_001, HUGE]
garbage = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(EDGE_INTS), st.floats(),
    st.text(max_size=12), st.binary(max_size=40), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(EDGE_INTS[:-1]),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_value = st.recursive(json_scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                           max_size=3), max_leaves=8)


def either(valid: st.SearchStrategy, bad: st.SearchStrategy = garbage, p_bad: int = 3) -> st.SearchStrategy:
    """Mostly well-formed values (to get deep into the code), sometimes garbage."""
    return st.integers(0, 9).flatmap(lambda i: bad if i < p_bad else valid)


def well_typed(e: model.Event) -> str | None:
    """None if every field of the event has its declared JSON-native type, else what is wrong."""
    for f in dataclasses.fields(e):
        v, t = getattr(e, f.name), f.type
        ok = {
            "int": isinstance(v, int) and not isinstance(v, bool),
            "str": isinstance(v, str),
            "bool": isinstance(v, bool),
            "tuple[str, ...]": isinstance(v, tuple) and all(isinstance(x, str) for x in v),
            "dict[str, Any]": isinstance(v, dict),
        }.get(t, True)
        if not ok:
            return f"{e.TYPE}.{f.name} should be {t}, got {type(v).__name__} {v!r:.40}"
    return None


# --- the world the surfaces run against ----------------------------------------------------------

TS = trustees(6)  # node-1..5 members, node-6 a stranger
PEERS = [t.peer_id for t in TS] + ["12D3KooWoutsider", ""]
NODE_IDS = [t.node_id for t in TS] + ["ghost", "node-1 "]
TX_IDS = ["t0", "tc", "tr", "ts", "tn", "bad id!", ""]


def base_ledger() -> rules.Ledger:
    """5 members, t=3; t0 aborted (node-5 double-voted, banned), tc collecting, tr reached, ts submitting."""
    ledger, ts = bootstrap(5, 3)
    run(ledger, ts[4].receive("t0", 1))
    run(ledger, ts[4].receive("t0", 2))
    run(ledger, ts[0].receive("tc", 1))
    for t in ts[:3]:
        run(ledger, t.receive("tr", 7))
        run(ledger, t.receive("ts", 9))
    run(ledger, rules.StartSubmission("ts", "sub", 5))
    run(ledger, rules.RecordSigned("ts", 5, 1, "0xsender", 0, "0xh1", "0x00"))
    return ledger


def clone(ledger: rules.Ledger) -> rules.Ledger:
    out = rules.Ledger()
    out.cluster, out.txs = ledger.cluster, dict(ledger.txs)
    return out


# --- surface: gossip payloads (wire.decode + the node's validator) -------------------------------


def signed_vote_json(tx: str = "tx", value: int = 1, who: int = 0, ts_offset: int = 0) -> dict[str, Any]:
    return sign(Vote(tx, value, TS[who].node_id, now_ms() + ts_offset), TS[who].key).to_json()


@st.composite
def vote_dicts(draw: st.DrawFn) -> object:
    """A signed vote as JSON, mutated: fields replaced, dropped, added; signatures forged or mangled."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_value)
    who = draw(st.integers(0, 5))
    d: dict[str, Any] = signed_vote_json(draw(st.sampled_from(["tx", "tc", "t0"])), draw(st.integers(0, 3)), who,
                                         draw(st.sampled_from([0, -1000, 6000, -400_000, 40_000])))
    for name in list(d):
        r = draw(st.integers(0, 11))
        if r == 0:
            del d[name]
        elif r == 1:
            d[name] = draw(json_value)
    sig = draw(st.integers(0, 7))
    if sig == 1:
        d["signature"] = signed_vote_json(who=(who + 1) % 5)["signature"]  # another member's signature
    elif sig == 2:
        d["signature"] = draw(st.text(alphabet="0123456789abcdefABCDEF x", max_size=130))
    if draw(st.integers(0, 9)) == 0:
        d[draw(st.text(max_size=5))] = draw(json_value)
    return d


@st.composite
def gossip_payloads(draw: st.DrawFn) -> tuple[str, bytes]:
    author = draw(st.sampled_from(PEERS))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        payload = draw(st.binary(max_size=200))
    elif kind == 1:  # pathological JSON the parser itself chokes on
        payload = draw(st.sampled_from([
            b'{"v":1,"votes":[' + b"1" * 5000 + b"]}", b"[" * 100_000, b'{"v":1,"votes":' + b"[" * 5000,
            b"\xef\xbb\xbf{}", b'{"v":1,"votes":[{}]}', b"x" * (wire.MAX_BYTES + 1), b"NaN", b"1e999",
        ]))
    else:
        votes = draw(st.lists(vote_dicts(), min_size=0, max_size=4))
        doc: object = {"v": draw(either(st.just(1), st.sampled_from([1.0, True, 2, "1", None]))), "votes": votes}
        if draw(st.integers(0, 14)) == 0:
            doc = draw(json_value)
        payload = json.dumps(doc).encode()
        if draw(st.integers(0, 9)) == 0 and payload:  # flip a byte
            i = draw(st.integers(0, len(payload) - 1))
            payload = payload[:i] + bytes([draw(st.integers(0, 255))]) + payload[i + 1:]
    return author, payload


class GossipEdge:
    """A TrusteeNode whose recorder is a pure ledger (as in tests/unit/test_edge.py): no host, no I/O."""

    def __init__(self) -> None:
        from node.p2p.identity import generate_key_file
        from node.service import NodeConfig, TrusteeNode

        self._tmp = tempfile.TemporaryDirectory()
        key = Path(self._tmp.name) / "k"
        generate_key_file(key, seed=bytes([2]) * 32)  # node-1's key (helpers.trustees)
        self.node = TrusteeNode(NodeConfig("node-1", str(key), "dsn", "etcd"))
        self.ledger = base_ledger()
        from events.follow import Follower

        self.node.recorder = SimpleNamespace(ledger=self.ledger, stats={"conflicts": 0},  # type: ignore[assignment]
                                             follower=Follower())  # nothing evicted: GET /tx reads the ledger
        self.snapshot = (self.ledger.cluster, dict(self.ledger.txs))

    def close(self) -> None:
        self._tmp.cleanup()

    def check(self, inp: tuple[str, bytes]) -> str:
        author, payload = inp
        try:
            decoded: list[SignedVote] | None = wire.decode(payload)
        except errors.InvalidVote:
            decoded = None
        except Exception as e:
            raise crash("gossip", e, "wire.decode: ") from e
        try:
            ok = self.node._validate(author, payload)
        except Exception as e:
            raise crash("gossip", e, "_validate: ") from e
        handed_on = []
        while not self.node.inbox.empty():
            handed_on.append(self.node.inbox.get_nowait())
        if not isinstance(ok, bool):
            raise finding("gossip", "crash", f"_validate returned {ok!r:.40}")
        if (self.ledger.cluster, self.ledger.txs) != self.snapshot:
            raise finding("gossip", "state", "the validator changed the ledger")
        if decoded is None:
            if ok or handed_on:
                raise finding("gossip", "accepted-invalid" if ok else "state", f"garbage passed: {payload[:60]!r}")
            return "rejected"
        members = self.ledger.cluster.members
        for a, sv, _env in handed_on:  # only R7 forgeries may reach the decider from a rejected batch
            voter = members.get(sv.vote.node_id)
            if a != author or voter is None or sv.verifies_under(voter.vote_key):
                raise finding("gossip", "state", f"inbox got a vote that is not a forgery: {sv}")
        return "accepted" if ok else "rejected"


# --- surface: signed votes ------------------------------------------------------------------------


@st.composite
def vote_inputs(draw: st.DrawFn) -> tuple[str, object]:
    if draw(st.booleans()):
        return "json", draw(vote_dicts())
    args = (draw(either(st.sampled_from(TX_IDS))), draw(either(st.integers(0, 2**64 - 1))),
            draw(either(st.sampled_from(NODE_IDS))), draw(either(st.integers(0, 2**64 - 1))))
    return "args", args


def check_vote(inp: tuple[str, object]) -> str:
    how, data = inp
    try:
        if how == "json":
            sv = SignedVote.from_json(data)
            if SignedVote.from_json(sv.to_json()) != sv:
                raise finding("vote", "crash", "to_json/from_json does not round-trip")
        else:
            v = Vote(*data)  # type: ignore[misc]
            v.signing_bytes()
    except errors.InvalidVote:
        return "rejected"
    except Finding:
        raise
    except Exception as e:
        raise crash("vote", e) from e
    return "accepted"


# --- surface: the decider (every command type) ---------------------------------------------------

BASE = base_ledger()
BASE_SNAPSHOT = copy.deepcopy((BASE.cluster, BASE.txs))


@st.composite
def signed_votes(draw: st.DrawFn) -> object:
    r = draw(st.integers(0, 9))
    if r == 0:
        return draw(garbage)
    who = draw(st.integers(0, 5))
    v = Vote(draw(st.sampled_from(["t0", "tc", "tr", "ts", "tn"])), draw(st.integers(0, 10)), TS[who].node_id,
             draw(st.integers(0, 10**13)))
    if r == 1:
        return SignedVote(v, sign(v, TS[(who + 1) % 6].key).signature)  # forged in another's name
    return sign(v, TS[who].key)


def commands() -> st.SearchStrategy:
    tx, node, peer = either(st.sampled_from(TX_IDS)), either(st.sampled_from(NODE_IDS)), either(st.sampled_from(PEERS))
    text, i64 = either(st.text(min_size=0, max_size=30)), either(st.integers(-2, 2**63))
    rev = either(st.sampled_from([0, 1, 4, 5, 6]), st.sampled_from([5.0, True, "5", None, HUGE]))
    key = either(st.sampled_from([t.vote_key for t in TS]) | st.binary(min_size=32, max_size=32))
    return st.one_of(
        st.builds(rules.Configure, either(st.integers(0, 6)), text, i64, i64, i64),
        st.builds(rules.AdmitMember, node, key, peer, text),
        st.builds(rules.RemoveMember, node, text, text, either(st.none() | st.integers(0, 6),
                                                               st.sampled_from([True, 2.0, "2", HUGE]))),
        st.builds(rules.Unban, node, text, text),
        st.builds(rules.ReceiveVote, signed_votes(), peer, i64),
        st.builds(rules.CheckDeadline, tx, i64),
        st.builds(rules.Reevaluate, tx),
        st.builds(rules.StartSubmission, tx, text, rev),
        st.builds(rules.RecordSigned, tx, rev, i64, text, i64, either(st.sampled_from(["0xh1", "0xh2"])),
                  either(st.sampled_from(["0x00", "ab", "0xzz", ""]))),
        st.builds(rules.RecordBroadcast, tx, rev, either(st.sampled_from(["0xh1", "0xh2"]))),
        st.builds(rules.RecordConfirmed, tx, rev, either(st.sampled_from(["0xh1", "0xh2"])), i64),
        st.builds(rules.RecordFailed, tx, rev, text, garbage),
        st.builds(rules.ApplyRetention, i64, text, either(st.integers(0, 40_000)), either(st.integers(0, 40_000))),
        st.builds(lambda x: x, garbage),  # not a command at all
    )


def check_command(cmd: object) -> str:
    ledger = clone(BASE)
    try:
        events = ledger.execute(cmd)  # type: ignore[arg-type]
    except errors.CommandRejected:
        if ledger.cluster is not BASE.cluster or ledger.txs != BASE.txs:
            raise finding("rules", "state", f"rejected {cmd!r:.120} but the ledger changed") from None
        return "rejected"
    except Exception as e:
        raise crash("rules", e, f"{type(cmd).__name__}: ") from e
    finally:
        if (BASE.cluster, BASE.txs) != BASE_SNAPSHOT:
            raise finding("rules", "state", f"{cmd!r:.120} mutated the shared state in place")
    for e in events:
        bad = well_typed(e)
        if bad:
            raise finding("rules", "accepted-invalid", f"{type(cmd).__name__} emitted {bad}")
        ne = NewEvent.of(e)
        if decode_event(ne.event_type, ne.schema_version, json.loads(ne.body)) != e:
            raise finding("rules", "crash", f"{e.TYPE} does not round-trip through its payload")
    return "accepted"


# --- surface: stored events on replay (upcast.decode, then the folds) ----------------------------

FIELD_VALUES: dict[str, st.SearchStrategy] = {
    "int": st.integers(0, 2**40), "str": st.text(max_size=10), "bool": st.booleans(),
    "tuple[str, ...]": st.lists(st.sampled_from(NODE_IDS[:5]), max_size=3),
    "dict[str, Any]": st.just({"vote": signed_vote_json("tc", 1, 1), "deadline_at_ms": 1}),
}
NAMED: dict[str, st.SearchStrategy] = {
    "node_id": st.sampled_from(NODE_IDS[:5]), "tx_id": st.sampled_from(["tc", "tr", "ts", "tn"]),
    "peer_id": st.sampled_from(PEERS[:5]), "vote_key": st.sampled_from([t.vote_key.hex() for t in TS]),
    "score": st.integers(0, 1000), "kind": st.sampled_from(["DOUBLE_VOTING", "MINORITY_VOTE", "SILENT_FAILURE"]),
    "reason": st.sampled_from(["BYZANTINE", "NO_QUORUM", "MINORITY_VOTE"]),
}


@st.composite
def stored_events(draw: st.DrawFn) -> tuple[str, int, object]:
    etype = draw(either(st.sampled_from(sorted(model.EVENT_TYPES)), st.text(max_size=12), p_bad=1))
    cls = model.EVENT_TYPES.get(etype)
    version = draw(either(st.just(cls.VERSION if cls else 1), st.sampled_from([0, 1, 2, 3, -1, 2**40]), p_bad=3))
    if cls is None or draw(st.integers(0, 9)) == 0:
        return etype, version, draw(json_value)
    payload: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        r = draw(st.integers(0, 19))
        if r == 0:
            continue  # missing
        base = NAMED.get(f.name, FIELD_VALUES.get(str(f.type), json_value))
        payload[f.name] = draw(json_value) if r == 1 else draw(base)
        if isinstance(payload[f.name], tuple):
            payload[f.name] = list(payload[f.name])
    if etype == "ReputationChanged" and version == 1:
        payload["score"] = draw(either(st.floats(0, 1), json_value | st.sampled_from(["nan", "inf", "x"])))
    if draw(st.integers(0, 19)) == 0:
        payload[draw(st.text(max_size=6))] = draw(json_value)
    return etype, version, payload


class Replay:
    """Projector tables and a ledger folded from a real log (base_ledger's commands), to fold fuzzed events onto."""

    def __init__(self) -> None:
        from projections.projector import Tables, apply

        self.apply = apply
        self.store = MemoryStore()
        ledger, ts = rules.Ledger(), TS[:5]
        cmds: list[object] = [rules.AdmitMember(t.node_id, t.vote_key, t.peer_id, "op") for t in ts]
        cmds.append(rules.Configure(3, "op"))
        cmds += [ts[4].receive("t0", 1), ts[4].receive("t0", 2), ts[0].receive("tc", 1)]
        for t in ts[:3]:
            cmds += [t.receive("tr", 7), t.receive("ts", 9)]
        cmds += [rules.StartSubmission("ts", "sub", 5), rules.RecordSigned("ts", 5, 1, "0xs", 0, "0xh1", "0x00")]
        for c in cmds:
            tx_id = getattr(c, "tx_id", None)
            streams = [model.CLUSTER_STREAM] + ([model.tx_stream(tx_id)] if tx_id else [])
            expected = self.store.stream_versions(streams)
            self.store.append([Unit.of(expected, ledger.execute(c))], signer("fuzz"))  # type: ignore[arg-type]
        self.tables = Tables()
        for r in self.store.read_all(limit=10_000):
            apply(self.tables, r)
        self.ledger = ledger
        self.position = self.store.last_position()

    def close(self) -> None:
        pass

    def check(self, inp: tuple[str, int, object]) -> str:
        etype, version, payload = inp
        try:
            e = decode_event(etype, version, payload)  # type: ignore[arg-type]
        except errors.InvalidCommand:
            return "rejected"
        except Exception as ex:
            raise crash("upcast", ex, f"decode({etype!r:.30}, {version!r:.12}): ") from ex
        bad = well_typed(e)
        rec = Recorded(self.position + 1, e.stream, 1, etype, version, payload, 1_700_000_000_000_000,  # type: ignore
                       "k", "fuzz", bytes(32), bytes(32))
        tables, ledger = copy.deepcopy(self.tables), clone(self.ledger)
        refused = False
        folds: list[tuple[str, Callable[[], None]]] = [
            ("projector.apply", lambda: self.apply(tables, rec)), ("Ledger.apply", lambda: ledger.apply(e))]
        for name, fold in folds:
            try:
                fold()
            except errors.InvalidCommand:
                refused = True  # a typed refusal (an event the folds cannot hold): allowed
            except Exception as ex:
                detail = f"{name}({etype}): {type(ex).__name__}: {str(ex)[:120]}"
                if bad:
                    raise finding("fold", "crash", f"{detail} (decode let through: {bad})") from ex
                raise finding("fold", "crash", detail + " on a well-typed event") from ex
        if bad:
            raise finding("upcast", "accepted-invalid", f"decode accepted {bad}")
        return "rejected" if refused else "accepted"


# --- surface: the event store (plan, MemoryStore.append) -----------------------------------------


SEED_VERSIONS = {"cluster": 2}


@st.composite
def units(draw: st.DrawFn) -> list[Unit]:
    """Mostly well-formed units (right expectations, fresh keys) with one malformed part now and then."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        events = []
        for _ in range(draw(st.integers(0, 3))):
            stream = draw(either(st.sampled_from(["cluster", "tx:a", "tx:b"]), garbage | st.text(max_size=5), p_bad=1))
            ev = (stream, draw(either(st.sampled_from(["VoteAccepted", "X"]), p_bad=1)),
                  draw(either(st.integers(1, 3), st.sampled_from([0, -1, 32767, 32768, 65535, 65536, 2**40, True,
                                                                  1.5, "1", None]), p_bad=1)),
                  draw(st.dictionaries(st.text(max_size=4), json_scalar, max_size=3)),
                  draw(either(st.integers(0, 10**9).map(lambda i: f"k{i}"),
                              st.sampled_from(["k1", "seed:1", "seed:2"]) | garbage, p_bad=1)))
            try:
                events.append(NewEvent(*ev))
            except (TypeError, ValueError):
                events.append(NewEvent(ev[0], ev[1], ev[2], {}, ev[4]))
        if draw(st.integers(0, 19)) == 0:
            events.append(NewEvent("cluster", "Big", 1, {"x": "y" * 70_000}, draw(st.text(max_size=5))))
        if draw(st.integers(0, 3)):  # the right expectations, as a decider would name them
            expected: dict[Any, Any] = {}
            for e in events:
                with contextlib.suppress(TypeError):
                    expected[e.stream_id] = SEED_VERSIONS.get(e.stream_id, 0)
        else:
            expected = draw(st.dictionaries(st.sampled_from(["cluster", "tx:a", "tx:b", "tx:c"]),
                                            either(st.integers(0, 3)), max_size=3))
        out.append(Unit(expected, tuple(events)))
    return out


class StoreSurface:
    def __init__(self) -> None:
        self.seed = MemoryStore()
        for i in (1, 2):
            self.seed.append([Unit({"cluster": i - 1}, (NewEvent("cluster", "Seed", 1, {"i": i}, f"seed:{i}"),))], W)

    def close(self) -> None:
        pass

    def _fresh(self) -> MemoryStore:
        s = MemoryStore()
        s._rows, s._keys, s._versions = list(self.seed._rows), set(self.seed._keys), dict(self.seed._versions)
        return s

    def check(self, us: list[Unit]) -> str:
        try:
            plan(us, dict(self.seed._versions), set(self.seed._keys))
        except (ValueError, TypeError):
            pass
        except Exception as e:
            raise crash("store", e, "plan: ") from e
        s = self._fresh()
        before = (list(s._rows), set(s._keys), dict(s._versions))
        try:
            results = s.append(us, signer("fuzz"))
        except (ValueError, TypeError) as e:
            if (s._rows, s._keys, s._versions) != before:
                raise finding("store", "state", f"append raised {type(e).__name__} after changing the store") from e
            return "rejected"
        except Exception as e:
            detail = f"{type(e).__name__}: {str(e)[:120]}"
            kind = "state" if (s._rows, s._keys, s._versions) != before else "crash"
            raise finding("store", kind, f"append: {detail}" + (" (rows half-written)" if kind == "state" else "")) \
                from e
        prev = bytes(32)
        for i, r in enumerate(s._rows, 1):
            if r.position != i or r.prev_hash != prev or r.content_hash() != r.hash:
                raise finding("store", "state", f"hash chain broken at {i}")
            prev = r.hash
        if len(s._rows) - len(before[0]) != sum(len(r.positions) for r in results):
            raise finding("store", "state", "rows appended differ from the positions reported")
        return "accepted" if any(r.positions for r in results) else "rejected"


# --- surface: the local HTTP API -----------------------------------------------------------------

TOKEN = "fuzz-token-0123456789"


class ApiSurface:
    """NodeAPI on 127.0.0.1 over a TrusteeNode with a pure-ledger recorder and a stand-in gossip host."""

    def __init__(self) -> None:
        from node.api import NodeAPI
        from node.service import Counters

        self.edge = GossipEdge()
        self.node = self.edge.node
        self.node.gossip = SimpleNamespace(peer_id=TS[0].peer_id, counters=Counters(), alive=True,  # type: ignore
                                           connected_member_count=len(TS))
        from node.signer import Signer

        self.node.signer = Signer.open(f"{self.edge._tmp.name}/node.journal", self.node.signing_key, "node-1",
                                       create=True)
        # No worker runs here: stand in for one that records every queued vote at once, so a cast
        # answers 202 as it would once its vote is in the log (the API waits for that).
        self.node.wait_recorded = lambda votes, timeout: True  # type: ignore[method-assign]
        self.node.overload = lambda: None  # type: ignore[method-assign]  # (no worker to fall behind here)
        self.api = NodeAPI(self.node, 0, TOKEN).start()
        self.port = self.api.port

    def close(self) -> None:
        self.api.stop()
        self.node.signer.close()
        self.edge._tmp.cleanup()

    def request(self, raw: bytes, timeout: float = 10.0) -> bytes:
        chunks = []
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            try:
                s.sendall(raw)
                s.shutdown(socket.SHUT_WR)  # a short body ends here instead of holding a server thread
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass  # the server answered and closed before reading everything: read its answer
            try:
                while chunk := s.recv(65536):
                    chunks.append(chunk)
            except ConnectionResetError:
                pass
        return b"".join(chunks)

    def check(self, raw: bytes) -> str:
        before = (self.edge.ledger.cluster, dict(self.edge.ledger.txs))
        try:
            resp = self.request(raw)
        except TimeoutError as e:
            raise finding("api", "hang", f"no answer in 10 s to {raw[:80]!r}") from e
        except OSError as e:
            raise finding("api", "crash", f"{type(e).__name__}: {e} for {raw[:80]!r}") from e
        queued = [self.node.outbox.get_nowait() for _ in range(self.node.outbox.qsize())]
        while not self.node.inbox.empty():
            self.node.inbox.get_nowait()
        if (self.edge.ledger.cluster, self.edge.ledger.txs) != before:
            raise finding("api", "state", "the API changed the ledger")
        m = re.match(rb"HTTP/1\.[01] (\d{3}) ", resp)
        if not m:
            if not resp:
                raise finding("api", "crash", f"connection closed without an answer to {raw[:80]!r}")
            raise finding("api", "not-json", f"no status line (HTTP/0.9?) for {raw[:60]!r}: {resp[:40]!r}")
        code = int(m.group(1))
        if code // 100 not in (2, 4, 5):
            raise finding("api", "crash", f"status {code}")
        if queued and code != 202:
            raise finding("api", "state", f"{code} but {len(queued)} votes were queued")
        _, _, body = resp.partition(b"\r\n\r\n")
        try:
            json.loads(body)
        except ValueError as e:
            raise finding("api", "not-json", f"{code} with a non-JSON body for {raw[:60]!r}: {body[:40]!r}") from e
        return "accepted" if code // 100 == 2 else "rejected"


@st.composite
def http_requests(draw: st.DrawFn) -> bytes:
    method = draw(either(st.sampled_from(["GET", "POST"]), st.sampled_from(["PUT", "HEAD", "DELETE", "OPTIONS",
                                                                           "get", "PATCH", ""]) | st.text(max_size=6),
                         p_bad=1))
    path = draw(either(st.sampled_from(["/votes", "/tx/tc", "/tx/tr", "/tx/nope", "/healthz", "/readyz", "/counters"]),
                       st.sampled_from(["/tx/", "/tx/bad id", "/tx/%00", "/votes?x=1", "//votes", "*", ""])
                       | st.text(max_size=20).map(lambda s: "/tx/" + s)))
    version = draw(either(st.just("HTTP/1.1"), st.sampled_from(["HTTP/1.0", "", "HTTP/2.0", "HTTP/1.1x"])))
    ballot = st.fixed_dictionaries({"tx_id": either(st.sampled_from(["tf1", "tf2", "tf3"]), json_value),
                                    "value": either(st.integers(0, 2**64 - 1), json_value)})
    batch = st.fixed_dictionaries({"votes": either(st.lists(either(ballot, json_value), max_size=4), json_value)})
    body_doc = draw(either(ballot | batch, json_value))
    body = json.dumps(body_doc).encode() if draw(st.integers(0, 5)) else draw(st.binary(max_size=60))
    if draw(st.integers(0, 19)) == 0:
        body = draw(st.sampled_from([b'{"tx_id":"t","value":' + b"9" * 5000 + b"}", b"[" * 50_000, b"x" * 5000]))
    headers = []
    auth = draw(st.integers(0, 5))
    if auth:
        headers.append("Authorization: " + (f"Bearer {TOKEN}" if auth > 2 else draw(st.sampled_from(
            ["Bearer x", TOKEN, "Bearer " + TOKEN + "x", "Bearer \u00e9"]) | st.text(max_size=10))))
    cl = draw(st.integers(0, 9))
    if cl < 6:
        headers.append(f"Content-Length: {len(body)}")
    elif cl < 9:
        headers.append("Content-Length: " + draw(st.sampled_from(["-1", "abc", "0", "99999", str(len(body) + 5),
                                                                  "1" * 30, ""])))
    headers += draw(st.lists(st.text(max_size=15).map(lambda s: "X-F: " + s), max_size=2))
    line = " ".join(p for p in (method, path, version) if p)
    raw = (line + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode("utf-8", "surrogatepass")
    return raw + body


def api_valid_request(tx_id: str, value: int) -> bytes:
    body = json.dumps({"tx_id": tx_id, "value": value}).encode()
    return (f"POST /votes HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n").encode() \
        + body


# --- surface: the command line -------------------------------------------------------------------

UNREACHABLE_DSN = "host=127.0.0.1 hostaddr=127.0.0.1 port=1 connect_timeout=2"
CLI_ENV = {"TVOTE_DSN": UNREACHABLE_DSN, "TVOTE_ETCD": "http://127.0.0.1:1", "TVOTE_DB_URL": "", "COLUMNS": "100",
           "TVOTE_METRICS_PORT": ""}


def _dsn() -> st.SearchStrategy:
    """DSNs that can never reach a real server: fuzz first, then a host/port nobody listens on."""
    frag = st.one_of(st.text(max_size=25), st.sampled_from(["dbname=x", "user='a b'", "sslmode=bogus", "port=abc",
                                                            "'unclosed", "service=nope", "x=1", "\x00", "postgresql://"]))
    return frag.map(lambda f: f"{f} {UNREACHABLE_DSN}")


def _url() -> st.SearchStrategy:
    return st.one_of(st.text(max_size=20).filter(lambda s: "://" not in s),
                     st.builds(lambda u, d: f"postgresql+psycopg://{u}@127.0.0.1:1/{d}",
                               st.text(alphabet="abcxyz%@:", max_size=6), st.text(alphabet="abc/?=", max_size=6)))


def _word() -> st.SearchStrategy:
    return st.one_of(st.text(max_size=12), st.sampled_from(["--help", "-1", "0", "--", "--dsn", "node-1", "ab" * 32,
                                                            "none", "true", "1e9", "\u00e9", ""]))


@st.composite
def cli_argvs(draw: st.DrawFn) -> list[str]:
    """argv for one of the commands, mostly well-shaped options with fuzzed values, plus junk tokens."""
    w, opt = _word(), draw
    cmd = draw(st.sampled_from(["up", "projector", "node", "replay", "audit verify", "status", "tx show", "bans list",
                                "unban", "members add", "members remove", "gc", "backup", "restore", "migrate",
                                "", "nosuch", "audit", "members"]))
    argv = cmd.split()
    pos = {"tx show": 1, "unban": 1, "members add": 3, "members remove": 1, "backup": 1, "restore": 1}.get(cmd, 0)
    argv += [opt(either(st.sampled_from(["tc", "node-1", "ab" * 32, "peer-1", "bk"]), w)) for _ in range(pos)]
    options: dict[str, st.SearchStrategy] = {
        "--dsn": _dsn(), "--etcd": w, "--operator": either(st.just("op"), w), "--reason": either(st.just("r"), w),
        "--threshold": either(st.integers(-1, 25).map(str), w), "--nodes": either(st.integers(-1, 25).map(str), w),
        "--transactions": w, "--byzantine": either(st.sampled_from(["none", "double"]), w), "--rate": w,
        "--deadline-ms": w, "--batch": w, "--once": st.just(None), "--keep": st.just(None), "--url": _url(),
        "--down": st.just(None), "--revision": w, "--node-id": w, "--key-file": w, "--api-token-file": w,
        "--listen": w, "--advertise": w, "--api-listen": w, "--metrics-listen": w, "--etcd-prefix": w,
        "--submission-days": w, "--vote-days": w,
        "--etcd-data-dir": w, "--check": st.just(None), "--no-check": st.just(None), "--data-dir": w,
    }
    names = draw(st.lists(st.sampled_from(sorted(options)), max_size=4))
    if cmd == "migrate" or (cmd not in ("up", "") and draw(st.booleans())):
        names.insert(0, "--url" if cmd == "migrate" else "--dsn")  # else TVOTE_DSN: unreachable too
    for name in names:
        value = draw(options[name])
        argv += [name] if value is None else [name, value]
    if draw(st.integers(0, 4)) == 0:
        argv.insert(draw(st.integers(0, len(argv))), draw(w))
    return argv


class CliSurface:
    """typer's CliRunner in an empty temp dir; ``up`` is stubbed so a valid argv starts nothing."""

    def __init__(self) -> None:
        import typer.main
        import typer.testing

        import tvote.up
        from tvote.cli import app

        # typer's CliRunner rebuilds the click command on every call (~50 ms): build it once.
        command = typer.main.get_command(app)
        self._orig_get = typer.testing._get_command
        typer.testing._get_command = lambda a: command if a is app else self._orig_get(a)  # type: ignore
        self.app, self.runner = app, typer.testing.CliRunner()
        self.calls: list[object] = []
        self._orig_run = tvote.up.run
        tvote.up.run = lambda opts, console: self.calls.append(opts) or True  # type: ignore[assignment]
        self._tmp = tempfile.TemporaryDirectory()
        self.cwd = self._tmp.name

    def close(self) -> None:
        import typer.testing

        import tvote.up

        tvote.up.run = self._orig_run  # type: ignore[assignment]
        typer.testing._get_command = self._orig_get  # type: ignore[attr-defined]
        self._tmp.cleanup()

    def check(self, argv: list[str]) -> str:
        sigterm, calls = signal.getsignal(signal.SIGTERM), len(self.calls)
        old = os.getcwd()
        os.chdir(self.cwd)
        try:
            res = self.runner.invoke(self.app, argv, env=CLI_ENV)
        finally:
            os.chdir(old)
            signal.signal(signal.SIGTERM, sigterm)
        exc = res.exception
        if exc is not None and not isinstance(exc, SystemExit):
            raise finding("cli", "crash", f"{argv!r:.100}: {type(exc).__name__}: {str(exc)[:100]}")
        if res.exit_code not in (0, 1, 2) or "Traceback" in res.output:
            raise finding("cli", "crash", f"{argv!r:.100}: exit {res.exit_code} {res.output[-200:]!r}")
        if res.exit_code and not res.output.strip():
            raise finding("cli", "crash", f"{argv!r:.100}: exit {res.exit_code} without a message")
        if os.listdir(self.cwd):
            created = os.listdir(self.cwd)
            for name in created:
                p = Path(self.cwd, name)
                p.unlink() if p.is_file() else shutil.rmtree(p)
            raise finding("cli", "state", f"{argv!r:.100} created {created}")
        stubbed_up = len(self.calls) > calls  # the stub prints nothing, as `up` never returns this fast
        if res.exit_code == 0 and not stubbed_up and not res.output.strip():
            # Without a database nothing succeeds except help screens and the stubbed `up`: both print.
            raise finding("cli", "crash", f"{argv!r:.100}: exit 0 and no output")
        return "accepted" if res.exit_code == 0 else "rejected"


# --- the registry ---------------------------------------------------------------------------------


class Stateless:
    """Wraps a plain check function in the surface interface (check, close)."""

    def __init__(self, check: Callable[[Any], str]) -> None:
        self.check = check

    def close(self) -> None:
        pass


@dataclass
class Surface:
    name: str
    strategy: st.SearchStrategy
    make: Callable[[], Any]  # -> an object with check(input) -> str and close()


def surfaces() -> list[Surface]:
    """Every input surface, in the order the bench runs them (cheap ones first)."""
    return [
        Surface("gossip", gossip_payloads(), GossipEdge),
        Surface("vote", vote_inputs(), lambda: Stateless(check_vote)),
        Surface("rules", commands(), lambda: Stateless(check_command)),
        Surface("upcast+fold", stored_events(), Replay),
        Surface("store", units(), StoreSurface),
        Surface("api", http_requests(), ApiSurface),
        Surface("cli", cli_argvs(), CliSurface),
    ]


