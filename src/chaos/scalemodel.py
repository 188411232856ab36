"""A calibrated model of the cluster at sizes this 2-core box cannot run as processes (issue 8 point 3).

Why a model: the seed's 14.3 scenarios need 10, 50 and 100 node processes at 100-1000 tx/s; here N processes share
2 cores and the cluster saturates at N=10 and 5 tx/s. The model composes per-stage costs measured on this machine
(``bench/scale_model.py --calibrate``) into per-resource utilisations and queueing latencies, and is checked against
the real load points (``--check``) before it is trusted with 50 and 100 nodes (``--predict``).

Why analytic rather than a discrete-event simulation: at N=100 and 500 tx/s every node receives 50,000 votes/s, which
a Python simulation would crawl through; closed forms are instant, deterministic and monotone by construction (so the
unit tests can state properties), at the price of mean behaviour only: p99s come from an exponential-tail rule (the
total queueing delay is taken as exponential with its mean), transients and 60-transaction runs are not modelled.

What happens to one transaction (the write path as the code has it, read off ``node/service.py``, ``node/duty.py``,
``node/p2p/host.py``, ``recording/recorder.py`` and ``events/follow.py``; docs/decisions.md says why): every node votes
(one API call each); its vote goes into its own worker at once and into its publisher, which sends at once when idle
and otherwise one message per publish interval (12.5 ms x N, 50 ms at least, 500 ms at most), holding all its own
votes of that interval. *Aimed delivery*: while every other member is connected (at most ``direct_max_peers`` = 32
of them), a message goes by committee delivery to the union of its votes' recipients, the first ``fanout`` (2)
members of each transaction's ranking besides the voter, one copy each, relayed by nobody; larger committees keep
the GossipSub mesh of degree D (every node receives every message, several copies, and forwards it). *One recorder*:
the member ranked first records a transaction's votes (an etcd transaction claims the stream head and the vote keys,
then one Postgres append under the log's advisory lock), in batches of what its worker drained in one cycle, or,
while it holds (``record_hold_s``, when a worker pass is shorter), the threshold's votes in one append and the rest
in one more; the
others hold what they received on standby and take over only when it looks gone (``claim_attempts_per_vote`` = 1,
more with take-overs; N was the old race, where votes of one transaction landed one per *round*). *Everyone
follows*: every node reads every row it did not write, checks its append's signature and decides its unit again
(R13), so the decide-and-fold cost of an event is paid N times cluster-wide, and every node verifies every vote's
signature once (at its edge, or when the log brings it).

Resources a point can saturate: a node is one CPython process, so its *GIL* (everything but libsodium's verify), its
*gossip thread* (Trio: transport, parsing, verify) and its *worker* (per-vote recording work) are one core each
whatever the machine has; then the machine's cores, etcd's and the Postgres log lock's measured capacities, or, when
every process shares one box, that box's cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

LN100 = math.log(100.0)  # p99 of an exponential is ln(100) x its mean
LN2 = math.log(2.0)  # its median


@dataclass(frozen=True)
class Gossip:
    """Transport parameters: GossipSub's (``node/p2p/config.py``), aimed delivery's and the node's windows."""

    d: int = 6
    d_low: int = 4
    d_high: int = 12
    batch_window_s: float = 0.005  # the worker's drain window (NodeConfig.batch_window_ms)
    link_latency_s: float = 0.0  # one-way network delay per hop on top of the measured loopback hop
    # the publisher's pace under load (node/wire.py): max(base, per member x N), capped
    publish_interval_s: float = 0.050
    publish_interval_per_member_s: float = 0.0125
    max_publish_interval_s: float = 0.500
    # committee delivery (GossipConfig.direct_delivery, direct_max_peers; NodeConfig.vote_fanout, 0 = every member)
    direct: bool = True
    direct_max_peers: int = 32
    fanout: int = 2
    # the first recorder holds a transaction's votes (NodeConfig.record_hold_ms; 0: off) while its worker's pass is
    # shorter than this: the threshold's votes then land in one append and the others in one more (node/duty.py)
    record_hold_s: float = 0.100

    def interval_s(self, n: int) -> float:
        """The publisher's interval under load for a committee of ``n`` (``wire.publish_interval_ms``)."""
        return min(self.max_publish_interval_s, max(self.publish_interval_s, self.publish_interval_per_member_s * n))

    def aimed(self, n: int) -> bool:
        """Committee delivery applies: every other member within ``direct_max_peers`` (else the mesh)."""
        return self.direct and 1 <= n - 1 <= self.direct_max_peers


@dataclass(frozen=True)
class Deployment:
    """Where the processes run: one node per machine of ``cores_per_node``, or all of them sharing ``shared_cores``.

    On a shared box Postgres, etcd and the load driver take their CPU from the same cores (as in bench/RESULTS.md);
    with one node per machine they run elsewhere and only their capacity limits the cluster.
    """

    name: str
    cores_per_node: float | None = None
    shared_cores: float | None = None
    background_cores: float = 0.0  # shared box only: what other users of the machine take

    def __post_init__(self) -> None:
        if (self.cores_per_node is None) == (self.shared_cores is None):
            raise ValueError("give exactly one of cores_per_node and shared_cores")

    @property
    def shared(self) -> bool:
        return self.shared_cores is not None


@dataclass(frozen=True)
class Calibration:
    """Measured per-stage costs: CPU in core-seconds, latencies in seconds, capacities per second."""

    gossip_copy_cpu_s: float  # mesh: transport CPU per copy of a gossip message sent or received (Trio, Noise, yamux)
    gossip_hop_s: float  # unloaded one-hop delivery time: sender enqueue -> receiver's consumer thread
    vote_verify_cpu_s: float  # Ed25519 verify (libsodium releases the GIL)
    vote_edge_cpu_s: float  # per vote at the edge: wire.decode at the validator (the pump reuses the parse)
    decide_cpu_s: float  # decide+evolve of one vote, fixed part
    decide_per_member_cpu_s: float  # and the part that grows with N (member scans, quorum count)
    follow_cpu_s: float  # read, decode, decide again and fold one event another node wrote (R13)
    follow_per_member_cpu_s: float
    exec_cpu_s: float  # client CPU of one execute that claims and appends (2 catch-ups, etcd txn, PG append)
    exec_vote_cpu_s: float  # and per claimed vote in its batch
    refusal_cpu_s: float  # client CPU of a refused claim and its resolution (etcd txn, PG versions, catch-up)
    query_latency_s: float  # one catch-up query round trip to Postgres
    etcd_txn_latency_s: float
    etcd_capacity_txn_per_s: float
    etcd_cpu_per_txn_s: float  # server CPU, all members together
    etcd_idle_cores: float
    pg_append_latency_s: float  # one append transaction, commit (fsync) included, under the log lock
    pg_capacity_appends_per_s: float  # the log lock serialises appends cluster-wide
    pg_cpu_per_append_s: float  # server CPU
    pg_cpu_per_query_s: float  # server CPU of one catch-up query
    api_request_cpu_s: float  # node side of one POST /votes (http.server, JSON, sign)
    driver_request_cpu_s: float  # the load driver's side (urllib): counted on a shared box only
    node_idle_cores: float  # an idle node: Trio loop, GossipSub heartbeats, the 10 Hz tick, polling threads
    # committee delivery (one copy per recipient, nobody relays): transport CPU to receive one message (validation
    # and delivery included, its votes' parse and verify not) and to send one copy; None: the mesh's per-copy figure
    direct_recv_cpu_s: float | None = None
    direct_send_cpu_s: float | None = None
    query_cpu_s: float = 0.0  # client CPU of one catch-up read (the follow schedule's, past the end of the log)
    # following another node's append, beyond the query and its events: Follower.feed and _settle, the hash chain
    # (its signature is counted under verify); a loaded node reads every 20 ms, about one append a read
    follow_append_cpu_s: float = 0.0
    conflict_backoff_s: float = 0.010  # recorder._resolve sleeps this while a live writer is mid-append
    follow_hz: float = 50.0  # the worker reads the log every follow_ms (20) while it moves ...
    follow_idle_hz: float = 5.0  # ... and backs off to follow_idle_ms (200) when quiet (counted in node_idle_cores)
    reads_per_move: float = 4.0  # reads a move of the log costs before the schedule is back at idle (20, 40, 80, ...)
    notes: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        """From ``bench/calibration.json`` (its ``costs``); unknown keys are ignored, so old files still load."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Scenario:
    n: int
    t: int
    rate: float  # offered transactions/s; every node votes on each
    claim_attempts_per_vote: float | None = 1.0  # 1: the designated recorder (node/duty.py); None: N (the old race)
    ballots_per_request: int = 1  # votes per POST /votes (the API has a batch form)

    def __post_init__(self) -> None:
        if self.n < 1 or not 1 <= self.t <= self.n or self.rate < 0 or self.ballots_per_request < 1:
            raise ValueError(f"need n >= 1, 1 <= t <= n, rate >= 0, ballots >= 1: {self}")

    @property
    def attempts(self) -> float:
        a = self.n if self.claim_attempts_per_vote is None else self.claim_attempts_per_vote
        return min(float(self.n), max(1.0, a))


@dataclass(frozen=True)
class Prediction:
    scenario: Scenario
    deployment: str
    node_cpu_cores: float  # per node, at the completed rate (what a CPU sampler would show)
    node_cpu_demand_cores: float  # per node, what the offered rate would take
    node_cpu_by_stage: dict[str, float]  # cores, at the completed rate
    server_cpu_cores: dict[str, float]  # etcd (all members) and Postgres, at the completed rate
    utilisation: dict[str, float]  # per resource, at the offered rate
    bottleneck: str  # the most loaded resource at the offered rate
    saturated: bool  # some resource at or above 1 at the offered rate
    first_saturating: str  # the resource that reaches 1 first as the rate grows
    max_tx_per_s: float
    completed_tx_per_s: float
    votes_per_message: float
    copies_per_message: float  # copies of each gossip message a recipient receives (1 with aimed delivery)
    recipients_per_message: float  # nodes each message reaches (the union of its votes' recipients, or N-1)
    aimed: bool  # committee delivery (else the GossipSub mesh)
    record_batch: float  # votes per Recorder.execute (one etcd claim, one append), at the completed rate
    cpu_ms_per_consensus: float  # CPU of all nodes per transaction, ms, at the completed rate (idle included)
    etcd_txn_per_s: float  # cluster-wide, at the completed rate
    pg_appends_per_s: float
    reception_p50_s: float  # vote signed -> VoteAccepted in the log; inf when saturated
    reception_p99_s: float
    e2e_p50_s: float  # first vote signed -> ThresholdReached in the log
    e2e_p99_s: float


def mesh_degree(n: int, g: Gossip) -> int:
    """Steady-state mesh size: D (kept within D_low..D_high by the heartbeat), or everyone when there are fewer."""
    return max(0, min(n - 1, max(g.d_low, min(g.d, g.d_high))))


def copies_received(n: int, g: Gossip) -> float:
    """Copies of one message a non-origin node receives.

    The origin sends to its d mesh peers; every node forwards a new message once, to its mesh peers except the one
    it came from (and the origin): d + (N-1)(d-1) sends over N-1 receivers. A 4-host full mesh gives 3.
    """
    d = mesh_degree(n, g)
    return 0.0 if n < 2 else d - 1 + d / (n - 1)


def hops(n: int, g: Gossip) -> float:
    """Mean hops to reach a node: 1 when aimed or in a full mesh, ~log_d(N-1) in a random d-regular mesh."""
    d = mesh_degree(n, g)
    if n < 2:
        return 0.0
    if g.aimed(n):
        return 1.0
    return 1.0 if n - 1 <= d or d < 2 else max(1.0, math.log(n - 1) / math.log(d))


def reach(n: int, g: Gossip, votes_per_msg: float) -> float:
    """Nodes one message of ``votes_per_msg`` own votes reaches, besides its sender.

    Aimed: each vote goes to ``fanout`` of the N-1 others (the ranking is a hash, so spread evenly), a message to the
    union of its votes' recipients: N-1 bins, ``fanout`` draws a vote. The mesh: everyone.
    """
    if n < 2:
        return 0.0
    if not g.aimed(n) or g.fanout <= 0:
        return float(n - 1)
    f = min(g.fanout, n - 1)
    return (n - 1) * (1 - (1 - f / (n - 1)) ** votes_per_msg)


@dataclass(frozen=True)
class _Load:
    """Rates, CPU per stage and utilisations at one rate; everything the latency part needs."""

    cpu: dict[str, float]  # node cores by stage
    trio_cpu: float  # of it, on the gossip thread (transport + edge checks)
    gil_free: float  # of it, outside the GIL (libsodium)
    util: dict[str, float]
    servers: dict[str, float]  # etcd (all members) and Postgres CPU, cores
    votes_per_msg: float
    claim_txns: float  # per node per second
    wins: float  # per node per second: claims that land
    batch: float  # claimed votes per etcd transaction
    msg_service_s: float  # gossip-thread CPU per distinct message
    reached: float  # nodes each message reaches
    pub_wait_s: float  # mean time an own vote waits in the publisher

    @property
    def node_cpu(self) -> float:
        return sum(self.cpu.values())

    @property
    def max_util(self) -> float:
        return max(self.util.values())


def _unloaded_execute_s(cal: Calibration) -> float:
    """Wall time of one execute on idle machines: two catch-ups, CPU, the etcd claim, the Postgres append."""
    return 2 * cal.query_latency_s + cal.exec_cpu_s + cal.etcd_txn_latency_s + cal.pg_append_latency_s


def _contention(s: Scenario) -> float:
    """0 with one claimant per vote, 1 when all N race: the share of rivals for a transaction's stream head."""
    return (s.attempts - 1) / (s.n - 1) if s.n > 1 else 0.0


def publisher(s: Scenario, g: Gossip, rate: float) -> tuple[float, float]:
    """Own votes per message and the mean wait of a vote in the publisher, at ``rate`` votes/s of one node.

    The driver casts at a steady pace: while votes come further apart than the interval I each is sent at once
    alone; past that the publisher sends every I with r x I votes, which arrived over the interval (a mean wait
    growing from 0 to I/2). A batched API request travels whole.
    """
    i = g.interval_s(s.n)
    ri = rate * i
    per_msg = max(1.0, ri, float(s.ballots_per_request) if rate > 0 else 1.0)
    return per_msg, (i / 2) * max(0.0, 1 - 1 / ri) if ri > 1 else 0.0


def _load(s: Scenario, dep: Deployment, cal: Calibration, g: Gossip, rate: float) -> _Load:
    n, a, w = s.n, s.attempts, g.batch_window_s
    aimed = g.aimed(n)
    votes_per_msg, pub_wait = publisher(s, g, rate)
    own_msgs = rate / votes_per_msg
    reached = reach(n, g, votes_per_msg)
    if aimed:  # one copy to each recipient, relayed by nobody; a recipient parses every vote of the message
        recv = cal.direct_recv_cpu_s if cal.direct_recv_cpu_s is not None else cal.gossip_copy_cpu_s
        send = cal.direct_send_cpu_s if cal.direct_send_cpu_s is not None else cal.gossip_copy_cpu_s
        msgs_in = own_msgs * reached  # by symmetry: what each node receives
        gossip_cpu = own_msgs * reached * send + msgs_in * recv
        per_msg_in = recv
    else:  # the mesh: every message reaches everyone, several copies each, every node forwards it once
        d = mesh_degree(n, g)
        copies = copies_received(n, g)
        msgs_in = (n - 1) * own_msgs
        gossip_cpu = cal.gossip_copy_cpu_s * (own_msgs * d + msgs_in * (copies + max(0, d - 1)))
        per_msg_in = cal.gossip_copy_cpu_s * (copies + max(0, d - 1))
    votes_in = msgs_in * votes_per_msg  # votes parsed and verified at this node's edge
    # The worker drains votes in cycles of (window + one execute). A recorder's votes of one transaction come in a
    # burst: its own vote at once, the others within the spread of the publishers' waits and one delivery, so they
    # fill 1 + spread/cycle batches. Batching is credited at the unloaded cycle so that load never lowers the
    # demand; real batches grow further under load. Whether claims land depends on the rivals for a stream head
    # only, so it is figured at the publishers' idle spread (independent of the rate: more rate, never fewer wins).
    cycle = w + _unloaded_execute_s(cal)
    hop = hops(n, g) * cal.gossip_hop_s if n > 1 else 0.0
    spread0 = w + hop if n > 1 else 0.0
    spread = spread0 + (pub_wait if n > 1 else 0.0)
    bursts = min(float(n), 1 + spread / cycle)
    bursts0 = min(float(n), 1 + spread0 / cycle)
    if g.record_hold_s > cycle:  # duty.may_hold at the unloaded cycle, as the batching above is credited
        held = 1.0 if s.t >= n else 2.0  # the threshold's append, then the rest's
        bursts, bursts0 = min(bursts, held), min(bursts0, held)
    attempts = rate * a  # votes this node tries to claim per second
    claim_txns = min(rate * a / n * bursts, 1.0 / cycle)
    batch = attempts / claim_txns if claim_txns else float(n) / bursts
    # A transaction's votes land one per round when every claimant races for its head (c = 1), in the designated
    # recorder's bursts when nobody races (c = 0).
    c = _contention(s)
    per_append = 1 + (n / bursts0 - 1) * (1 - c)
    landing = min(1.0, n / (per_append * a * bursts0))
    wins = claim_txns * landing
    refusals = claim_txns - wins
    events = rate * (n + 2)  # TransactionOpened, N VoteAccepted, ThresholdReached
    others = (n - 1) / n  # rows another node wrote: read, checked and decided again (our own are adopted)
    # the follow schedule: idle reads are in node_idle_cores; each move of the log (an append anywhere) brings the
    # schedule back to follow_ms for a few reads, at most follow_hz in all
    reads = min(cal.follow_hz, cal.follow_idle_hz + cal.reads_per_move * n * wins)
    cpu = {
        "idle": cal.node_idle_cores,
        "api": rate / s.ballots_per_request * cal.api_request_cpu_s,
        "gossip": gossip_cpu,
        "edge": votes_in * cal.vote_edge_cpu_s,
        # every vote once per node (memoised: at the edge, or when the log brings it), and the signature of
        # every other node's append
        "verify": (n * rate + (n - 1) * wins) * cal.vote_verify_cpu_s,
        "decide": attempts * (cal.decide_cpu_s + n * cal.decide_per_member_cpu_s),  # what this node records
        "record": claim_txns * cal.exec_cpu_s + attempts * cal.exec_vote_cpu_s + refusals * cal.refusal_cpu_s,
        "follow": (events * others * (cal.follow_cpu_s + n * cal.follow_per_member_cpu_s)
                   + (n - 1) * wins * cal.follow_append_cpu_s + (reads - cal.follow_idle_hz) * cal.query_cpu_s),
    }
    trio_cpu = cpu["gossip"] + cpu["edge"] + votes_in * cal.vote_verify_cpu_s
    gil_free = cpu["verify"]
    node_cpu = sum(cpu.values())
    etcd_txns = n * claim_txns
    pg_appends = n * wins
    util = {
        "gossip thread": trio_cpu,  # one Trio thread per node
        "node GIL": node_cpu - gil_free,  # one interpreter per node
        # the worker thread absorbs fixed costs by batching; what grows with the votes must fit in one thread
        "worker": cpu["decide"] + cpu["follow"] + attempts * cal.exec_vote_cpu_s + refusals * cal.refusal_cpu_s,
        "etcd": etcd_txns / cal.etcd_capacity_txn_per_s,
        "postgres": pg_appends / cal.pg_capacity_appends_per_s,
    }
    queries = n * (2 * claim_txns + refusals + reads)
    servers = {"etcd": cal.etcd_idle_cores + etcd_txns * cal.etcd_cpu_per_txn_s,
               "postgres": pg_appends * cal.pg_cpu_per_append_s + queries * cal.pg_cpu_per_query_s}
    if dep.shared:
        driver = n * rate / s.ballots_per_request * cal.driver_request_cpu_s
        util["box cpu"] = (n * node_cpu + sum(servers.values()) + driver + dep.background_cores) / dep.shared_cores
    else:
        util["node cpu"] = node_cpu / dep.cores_per_node
    service = per_msg_in + votes_per_msg * (cal.vote_edge_cpu_s + cal.vote_verify_cpu_s)
    return _Load(cpu, trio_cpu, gil_free, util, servers, votes_per_msg, claim_txns, wins, batch, service, reached,
                 pub_wait)


def max_rate(s: Scenario, dep: Deployment, cal: Calibration, g: Gossip = Gossip()) -> tuple[float, str]:
    """The rate at which the first resource reaches utilisation 1, and that resource (bisection: loads are monotone)."""
    def at(r: float) -> _Load:
        return _load(Scenario(s.n, s.t, r, s.claim_attempts_per_vote, s.ballots_per_request), dep, cal, g, r)

    zero = at(0.0)
    if zero.max_util >= 1:
        return 0.0, max(zero.util, key=zero.util.__getitem__)
    lo, hi = 0.0, 1.0
    while at(hi).max_util < 1:
        lo, hi = hi, hi * 2
        if hi > 1e9:
            return math.inf, "none"
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if at(mid).max_util < 1 else (lo, mid)
    top = at(hi)
    return lo, max(top.util, key=top.util.__getitem__)


def _md1_wait(rho: float, service: float) -> float:
    """Mean wait in an M/D/1 queue (Pollaczek-Khinchine with deterministic service)."""
    return rho / (2 * (1 - rho)) * service


def _latencies(s: Scenario, dep: Deployment, cal: Calibration, g: Gossip, ld: _Load) -> tuple[float, ...]:
    """Reception and end-to-end p50/p99: deterministic service times plus queueing delays (exponential tail).

    CPU-bound steps slow down by 1/(1-rho) of the CPU they compete for (the box when shared, the node's GIL when
    not); etcd is M/M/1 on its measured capacity; the Postgres log lock is M/D/1; the gossip thread is M/D/1 per hop;
    a vote waits for the worker's drain window and, when the worker is busy, for the rest of the cycle in progress.
    """
    n, t, w = s.n, s.t, g.batch_window_s
    rho_cpu = ld.util["box cpu"] if dep.shared else ld.util["node GIL"]
    slow = 1 / (1 - rho_cpu)
    server_slow = slow if dep.shared else 1.0  # servers share the box's cores only when shared
    rho_etcd, rho_pg, rho_trio = ld.util["etcd"], ld.util["postgres"], ld.util["gossip thread"]
    # gossip: the publisher's wait, then hops (one when aimed), each a transport delay plus the gossip thread's queue
    hop_wait = _md1_wait(rho_trio, ld.msg_service_s) * slow + cal.gossip_hop_s * (slow - 1)
    g_det = ld.pub_wait_s + hops(n, g) * (cal.gossip_hop_s + g.link_latency_s)
    g_wait = hops(n, g) * hop_wait
    # one execute (a round on a stream): catch-ups, CPU, the etcd claim and the append, each with its queue
    q = cal.query_latency_s
    cpu = cal.exec_cpu_s + ld.batch * cal.exec_vote_cpu_s
    etcd = cal.etcd_txn_latency_s * server_slow
    pg = cal.pg_append_latency_s * server_slow
    exec_det = 2 * q + cpu + cal.etcd_txn_latency_s + cal.pg_append_latency_s
    exec_wait = (2 * q * (server_slow - 1) + cpu * (slow - 1) + (etcd / (1 - rho_etcd) - cal.etcd_txn_latency_s)
                 + (pg + _md1_wait(rho_pg, pg) - cal.pg_append_latency_s))
    # contention: with c = 1 every claimant races for the same head, so a transaction's votes land one per round;
    # a loser asks Postgres (one query) while the winner is still appending, finds it mid-append, and backs off
    c = _contention(s)
    round_det = exec_det + c * (q + cal.conflict_backoff_s)
    round_wait = exec_wait + c * q * (server_slow - 1)
    # The worker is a batch server: a vote that arrives mid-cycle waits for the rest of it (half a cycle on
    # average), then rides the next one; cycles stretch as the per-vote work approaches one thread.
    cycle = (w + exec_det + exec_wait) / (1 - min(0.99, ld.util["worker"]))
    worker_wait = min(1.0, ld.claim_txns * cycle) * cycle / 2
    remote = (1 - c) * (n - 1) / n if n > 1 else 0.0  # share of votes whose first claimant is one hop away

    # A remote claimant is usually still busy with the batch its own vote opened when the others' votes arrive:
    # they wait for the rest of that cycle first (with c = 1 every node records its own vote, nobody waits so).
    residual = max(0.0, w + exec_det - g_det)

    def pair(rounds_det: float, rounds_wait: float, remote_share: float) -> tuple[float, float]:
        det = remote_share * (g_det + residual) + w + rounds_det * round_det
        wait = remote_share * g_wait + worker_wait + rounds_wait * round_wait
        return det + LN2 * wait, det + LN100 * wait

    rec50, _ = pair(1 + c * ((n + 1) / 2 - 1), 1 + c * ((n + 1) / 2 - 1), remote)
    _, rec99 = pair(1 + c * (n - 1), 1 + c * (n - 1), remote)
    e2e50, e2e99 = pair(1 + c * (t - 1), 1 + c * (t - 1), (1 - c) if t > 1 else 0.0)
    return rec50, rec99, e2e50, e2e99


def predict(s: Scenario, dep: Deployment, cal: Calibration, g: Gossip = Gossip()) -> Prediction:
    """Utilisations at the offered rate, the max sustainable rate, CPU at the completed rate, latencies."""
    offered = _load(s, dep, cal, g, s.rate)
    top, first = max_rate(s, dep, cal, g)
    saturated = offered.max_util >= 1
    done = min(s.rate, top)
    eff = _load(s, dep, cal, g, done) if saturated else offered
    lat = (math.inf,) * 4 if saturated else _latencies(s, dep, cal, g, offered)
    return Prediction(
        scenario=s, deployment=dep.name, node_cpu_cores=eff.node_cpu,
        node_cpu_demand_cores=offered.node_cpu, node_cpu_by_stage=dict(eff.cpu),
        server_cpu_cores=dict(eff.servers),
        utilisation=dict(offered.util), bottleneck=max(offered.util, key=offered.util.__getitem__),
        saturated=saturated, first_saturating=first, max_tx_per_s=top, completed_tx_per_s=done,
        votes_per_message=offered.votes_per_msg,
        copies_per_message=1.0 if g.aimed(s.n) else copies_received(s.n, g),
        recipients_per_message=offered.reached, aimed=g.aimed(s.n), record_batch=eff.batch,
        cpu_ms_per_consensus=1e3 * s.n * eff.node_cpu / done if done > 0 else math.inf,
        etcd_txn_per_s=s.n * eff.claim_txns, pg_appends_per_s=s.n * eff.wins,
        reception_p50_s=lat[0], reception_p99_s=lat[1], e2e_p50_s=lat[2], e2e_p99_s=lat[3],
    )


__all__ = ["Calibration", "Deployment", "Gossip", "Prediction", "Scenario", "copies_received", "hops",
           "max_rate", "mesh_degree", "predict", "publisher", "reach"]
