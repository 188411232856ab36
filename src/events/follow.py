"""Following the log as an honest follower does (R13): check every row, apply only what holds.

Every reader of the log folds it through a :class:`Follower`: trustee nodes, the submitter, the
projector (and so ``replay``), ``audit verify``, the chaos checker. For each row it checks

1. the hash chain (``prev_hash`` is the previous row's hash, the row hashes to its ``hash``);
2. the writer's signature: an append's last row signs the batch (``events.writers``), under the key
   the log admitted for that writer (a member's vote key, an operator's or submitter's key);
3. the writer's entitlement to the unit's command (``rules.authorize``);
4. the decision: the unit's command, decided again on the state the log holds before it
   (``rules.Ledger.step``), must give exactly the unit's events.

A row that fails is **void**: never applied, by every honest follower alike (they all run this same
pure code over the same rows, so their views still agree), and reported with its position and
reason. When the failure is the writer's own doing (its signature covers the row, but the rules do
not produce it), the fault is kept in the cluster state until a trustee reports it
(``rules.ReportInvalidEntry``), which makes it a violation of the writer.

Rows an append wrote are settled only once its signed last row is read; until then they wait.
Rows no signature ever covers (an INSERT by anyone holding the database role) are void once the
next signed batch shows where its own rows begin. A row still occupies its stream version when it
is void: the next writer's decision reads the stream after it.
"""

from __future__ import annotations

from collections import ChainMap, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from events import commands, rules
from events.bloom import Bloom
from events.errors import CommandRejected, InvalidCommand
from events.model import Event, tx_stream
from events.store import GENESIS, Recorded
from events.writers import verify_batch


@dataclass(frozen=True)
class Void:
    """A row every honest follower ignores, and why. ``attributable``: its writer's own signature covers it."""

    position: int
    writer: str
    reason: str
    attributable: bool


@dataclass(frozen=True)
class Anomaly:
    """A break in the log itself (a gap in positions, a row that does not chain to the one before)."""

    position: int
    problem: str


@dataclass(frozen=True)
class Settled:
    """One row, decided: its event if it holds, or why it is void."""

    row: Recorded
    event: Event | None
    void: Void | None = None


Loader = Callable[[str], list[Recorded]]  # a transaction's stream, read back from the log (the shell's port)
# Finished transactions a long-running reader keeps in memory (a node's `--retain-final`); the others are read
# back from the log when a late command names them.
DEFAULT_RETAIN_FINAL = 10_000
# What may leave memory, once its deadline has fired: by default only what is final. A trustee node also lets
# consensus that waits for the chain leave (``AWAITING_CHAIN``): it decides nothing more about it unless a later
# command names it, which reads it back first; otherwise a chain or submitter down for a day kept every such
# transaction in every node's memory (~6 KB each at N=10: gigabytes at 10 tx/s). The submitter keeps them: they
# are its work.
AWAITING_CHAIN = frozenset({rules.THRESHOLD_REACHED, rules.SUBMITTING})


class Follower:
    """The checked fold of the log into a ``rules.Ledger`` (pure: rows in, verdicts out).

    **Bounded memory**: with ``retain_final`` and a ``loader``, a transaction that is final (or has another
    status in ``evictable``) and whose deadline has fired leaves memory once ``retain_final`` newer such
    transactions exist. Its id goes in a
    fixed-size Bloom filter; when a later command or row names it, its stream is read back through the
    loader and folded again (rows found void are remembered by position and skipped), so a late vote is
    judged exactly as if it had never left: a late double vote is caught, with both signed votes.
    ``tests/unit/test_eviction.py`` holds it against the unbounded follower: same verdicts, same events.
    """

    def __init__(self, me: str | None = None, trust_own: bool = True, retain_final: int | None = None,
                 loader: Loader | None = None, evictable: frozenset[rules.TxStatus] = rules.FINAL) -> None:
        self.ledger = rules.Ledger()
        self.versions: dict[str, int] = {}
        self.position = 0  # last settled row: every row up to here is applied or void
        self.read = 0  # last row read (rows after ``position`` wait for their batch's signature)
        self.prev_hash = GENESIS
        self.me = me  # our own writer name: rows we signed are not decided again (``trust_own``)
        self.trust_own = trust_own
        self._pending: list[tuple[Recorded, bool]] = []  # (row, tampered)
        self.anomalies: list[Anomaly] = []
        self.voided = 0
        # Streams with a row edited after it was written, and whether rows went missing. Either puts the whole
        # log in doubt (``in_doubt``): later decisions that fail may have been made honestly on what the row
        # said before; they are void, but no writer's fault (an edit or deletion behind the service's back must
        # never get an honest writer banned, R14).
        self.tainted: set[str] = set()
        self.broken = False
        self.retain_final = retain_final if loader is not None else None
        self.evictable = evictable
        self.loader = loader
        self._final: OrderedDict[str, None] = OrderedDict()  # evictable, deadline fired: the next to leave memory
        self.evicted = Bloom()
        self.void_positions: set[int] = set()  # rows void, skipped when a stream is read back
        self.reloaded = 0

    # --- bounded memory ---------------------------------------------------------------------------

    def _note_final(self, tx_ids: Iterable[str]) -> None:
        if self.retain_final is None:
            return
        txs = self.ledger.txs
        for tx_id in tx_ids:
            tx = txs.get(tx_id)
            if tx is not None and tx.deadline_fired and tx.status in self.evictable:
                self._final[tx_id] = None
                self._final.move_to_end(tx_id)

    def ensure(self, tx_ids: Iterable[str]) -> None:
        """Bring transactions that left memory back from the log (before deciding anything about them)."""
        if self.loader is None:
            return
        for tx_id in tx_ids:
            if tx_id in self.ledger.txs or tx_id not in self.evicted:
                continue
            state = rules.State(self.ledger.cluster)
            version = 0
            for r in self.loader(tx_id):
                version = max(version, r.stream_version)
                if r.position not in self.void_positions and r.position <= self.position:
                    state = rules.evolve(state, r.event())
            if state.tx is not None:
                self.ledger.txs[tx_id] = state.tx
                self.versions[tx_stream(tx_id)] = max(self.versions.get(tx_stream(tx_id), 0), version)
                self.reloaded += 1
                self._note_final([tx_id])  # no eviction here: the caller is about to decide on these

    def track(self, tx_ids: Iterable[str]) -> None:
        """Note transactions that may have become final; let the oldest finished ones leave memory."""
        if self.retain_final is None:
            return
        self._note_final(tx_ids)
        txs = self.ledger.txs
        while len(self._final) > self.retain_final:
            tx_id, _ = self._final.popitem(last=False)
            txs.pop(tx_id, None)
            self.versions.pop(tx_stream(tx_id), None)
            self.evicted.add(tx_id)

    # --- reading ----------------------------------------------------------------------------------

    def feed(self, rows: list[Recorded]) -> list[Settled]:
        out: list[Settled] = []
        for r in rows:
            if r.position != self.read + 1:
                self.anomalies.append(Anomaly(self.read + 1, f"missing rows: the next stored is {r.position}"))
                self.broken = True
            if r.prev_hash != self.prev_hash:
                self.anomalies.append(Anomaly(r.position, "prev_hash does not chain to the previous row"))
                self.broken = True
            tampered = r.content_hash() != r.hash
            self.prev_hash, self.read = r.hash, r.position
            self.versions[r.stream_id] = max(self.versions.get(r.stream_id, 0), r.stream_version)
            self._pending.append((r, tampered))
            if r.signature is not None:
                out += self._settle(r)
        return out

    def adopt_own(self, last_position: int, last_hash: bytes, versions: dict[str, int]) -> None:
        """Our own append, whose state the recorder already adopted: move past it without reading it back."""
        assert not self._pending, "adopt only right after everything read is settled"
        self.position = self.read = last_position
        self.prev_hash = last_hash
        self.versions.update(versions)

    @property
    def waiting(self) -> int:
        """Rows read but not settled yet (their batch's signed row has not been read)."""
        return len(self._pending)

    # --- settling a signed batch -----------------------------------------------------------------

    def _settle(self, signed: Recorded) -> list[Settled]:
        first = signed.signed_from or 0
        pending, self._pending = self._pending, []
        out = [self._void(r, "no writer signature covers this row", False) for r, _ in pending if r.position < first]
        batch = [(r, t) for r, t in pending if r.position >= first]
        writer = signed.writer
        cluster = self.ledger.cluster
        key = cluster.key_of(writer) or _genesis_key(batch, writer, cluster)
        problem = None
        if not batch or batch[0][0].position != first:
            problem = "the signed range is not all in the log"
        elif key is None:
            problem = f"{writer!r} is not a writer the log admitted"
        elif not verify_batch(key, first, signed.hash, signed.signature or b""):
            problem = f"the signature is not {writer}'s"
        if problem:
            if batch and batch[0][0].position != first:
                self.broken = True  # rows of a signed batch are gone: what follows may rest on them
            if any(tampered for _, tampered in batch):  # an edit (of the writer's name, say) made it fail
                self.tainted.update(r.stream_id for r, _ in batch)
            return out + [self._void(r, problem, False) for r, _ in batch]
        if any(r.writer != writer for r, tampered in batch if not tampered):  # an edited writer: an edit, below
            return out + [self._void(r, "rows of another writer inside a signed batch", True) for r, _ in batch]
        unit: list[tuple[Recorded, bool]] = []
        for r, t in batch:
            if r.command is not None and unit:
                out += self._unit(writer, unit)
                unit = []
            unit.append((r, t))
        return out + self._unit(writer, unit)

    def _unit(self, writer: str, unit: list[tuple[Recorded, bool]]) -> list[Settled]:
        rows = [r for r, _ in unit]
        if rows[0].command is None:
            return self._fault(writer, rows, "rows outside any unit (no command)")
        edited = [r.position for r, t in unit if t]
        if edited:  # the signature covers the stored hash, not what the row now says; a unit stands whole or not
            self.tainted.update(r.stream_id for r in rows)
            return [self._void(r, "edited after it was written (content does not match its hash)"
                               if r.position in edited else f"in a unit with a row edited after it was written "
                                                            f"(position {edited[0]})", False) for r in rows]
        try:
            logged = [r.event() for r in rows]
            command = commands.from_json(rows[0].command, logged)
        except InvalidCommand as e:
            return self._fault(writer, rows, f"unreadable: {e}")
        tx_id = getattr(command, "tx_id", None)
        if isinstance(tx_id, str):
            self.ensure([tx_id])
        if self.trust_own and writer == self.me and not self.in_doubt:
            for e in logged:  # ours: decided by this very code before we signed it, on the log as it still is
                self.ledger.apply(e)
            return self._done(rows, logged)
        try:
            rules.authorize(self.ledger.cluster, writer, command)
            scratch = rules.Ledger()
            scratch.cluster, scratch.txs = self.ledger.cluster, ChainMap({}, self.ledger.txs)  # type: ignore
            decided = scratch.execute(command)
        except CommandRejected as e:
            return self._fault(writer, rows, f"{type(command).__name__} refused: {e}")
        if decided != logged or [(r.stream_id, r.idempotency_key) for r in rows] != [
                (e.stream, e.key) for e in decided]:
            return self._fault(writer, rows, f"{type(command).__name__} decides "
                                             f"{[e.TYPE for e in decided]}, the log says {[e.TYPE for e in logged]}")
        self.ledger.cluster = scratch.cluster
        self.ledger.txs.update(scratch.txs.maps[0])  # type: ignore[attr-defined]
        return self._done(rows, decided)

    def _done(self, rows: list[Recorded], events: list[Event]) -> list[Settled]:
        self.position = rows[-1].position
        self.track({e.tx_id for e in events if hasattr(e, "tx_id")})
        return [Settled(r, e) for r, e in zip(rows, events, strict=True)]

    def _fault(self, writer: str, rows: list[Recorded], reason: str) -> list[Settled]:
        """Void, and the writer's doing: kept for a trustee to report (rules.ReportInvalidEntry).

        Unless the log was edited or lost rows the decision may have rested on: then nobody is to blame.
        """
        if self.in_doubt:
            return [self._void(r, f"{reason} (after an edited or missing row: nobody's fault)", False) for r in rows]
        c = self.ledger.cluster
        self.ledger.cluster = replace(c, faults={**c.faults, rows[0].position: rules.Fault(writer, reason)})
        return [self._void(r, reason, True) for r in rows]

    @property
    def in_doubt(self) -> bool:
        """Was a row edited after it was written, or are rows missing? Then nobody is blamed from here on.

        Any later decision that fails may rest on what the log said before, and not only on the edited
        row's own stream: an edit may have changed the stream a row names, and what was built on it spreads
        through the cluster stream every decision reads (a silence charged on an edited transaction moves a
        reputation that the next ban reads). So after an edit, failing entries are void and nobody's fault
        until the log is restored, and our own rows are decided again like anyone's: trusting them (decided
        on what the row said before) kept in our view what every other follower voids, and our next
        decisions parted from theirs (an honest writer reported for an edit, seen in CI).
        """
        return self.broken or bool(self.tainted)

    def _void(self, r: Recorded, reason: str, attributable: bool) -> Settled:
        self.voided += 1
        self.void_positions.add(r.position)
        self.position = max(self.position, r.position)
        return Settled(r, None, Void(r.position, r.writer, reason, attributable))


def _genesis_key(batch: list[tuple[Recorded, Any]], writer: str, cluster: rules.Cluster) -> bytes | None:
    """The first operator signs the very batch that admits it: its key is in that batch's first command."""
    if cluster.has_operator() or not batch:
        return None
    cmd = batch[0][0].command
    if isinstance(cmd, dict) and cmd.get("type") == "AdmitWriter" and cmd.get("writer") == writer \
            and cmd.get("role") == "operator":
        try:
            return bytes.fromhex(cmd["public_key"])
        except (TypeError, ValueError):
            return None
    return None
