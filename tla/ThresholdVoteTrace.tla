------------------------- MODULE ThresholdVoteTrace -------------------------
(***************************************************************************)
(* ThresholdVote with a history variable, for the conformance test         *)
(* (tests/tla/test_conformance.py).  TLC runs it in -simulate mode: every  *)
(* random behaviour records each step as <<action, arguments, state after>>  *)
(* and, when it reaches TraceLen steps, prints the whole trace.  The test  *)
(* replays each trace through the Python decider (events.rules.decide /    *)
(* evolve) and compares the two states after every step.                   *)
(*                                                                         *)
(* The first step, <<"Init", constants, state>>, carries the constants the *)
(* test configures the decider with (threshold, reputation units, floor,   *)
(* floor ban).  Steps with no decider command (HonestSign, StoreDown,      *)
(* StoreUp, the lock, crashes, the chain) only change what the test's      *)
(* shell sends later.                                                      *)
(***************************************************************************)
EXTENDS ThresholdVote, Sequences

CONSTANTS
    TraceLen,          \* steps per printed trace
    DeadlineNotBefore, \* scheduling only: the deadline waits this many steps
    RemoveNotBefore,   \* scheduling only: an operator removal waits this many steps
    MaxForged,         \* scheduling only: at most this many forged messages per trace
    MaxQuiet           \* scheduling only: at most this many members crashed from the start

\* The scheduling knobs only prune behaviours (every trace is still a
\* behaviour of ThresholdVote): a uniform random walk otherwise spends its
\* steps on forgeries and early deadlines and seldom reaches the submitters,
\* and it delivers every member's vote long before the deadline, so silence
\* on a transaction that reached consensus would hardly ever be seen.  Each
\* trace picks up to MaxQuiet "quiet" members (in quiet): crashed from the
\* start, they never sign, vote or forge (all of which ThresholdVote allows
\* them not to do).

VARIABLES
    hist,  \* <<action, arguments, state after>> per step
    quiet  \* members crashed from the start (scheduling only)

\* What the test compares (and the submitter's local view it needs to build
\* the commands).
Snap ==
    [tx       |-> txState,
     acc      |-> accepted,
     banned   |-> banned,
     removed  |-> removed,
     viol     |-> violations,
     rep      |-> rep,
     streak   |-> streak,
     dl       |-> deadlineFired,
     dec      |-> decided,
     cert     |-> certificate,
     logUp    |-> logUp,
     inflight |-> inflight,
     subRev   |-> subRev,
     signed   |-> signedRaw,
     myRev    |-> myRev,
     myRaw    |-> myRaw]

Forged == Cardinality({i \in 1..Len(hist) : hist[i][1] = "ReceiveForged"})


Log(action, args) == hist' = Append(hist, <<action, args, Snap'>>) /\ UNCHANGED quiet

Params ==
    [Quiet |-> {}, T |-> T, Honest |-> Honest, HonestValue |-> HonestValue, RepMax |-> RepMax,
     Penalty |-> Penalty, Reward |-> Reward, Floor |-> Floor, FloorBanAfter |-> FloorBanAfter]

\* The test recreates the initial reputations and streaks in the decider by
\* replaying earlier consensus transactions (tests/tla/test_conformance.py,
\* Replay.prime).  Every member either votes on a consensus transaction (its
\* streak restarts) or is silent on it, and at most N - t can be silent, so
\* at most N - t members can carry a streak: the trace starts only from such
\* states (ThresholdVote itself allows any combination).
Primeable == Cardinality({m \in Members : streak[m] > 0}) <= Cardinality(Members) - T

TraceInit ==
    /\ Init /\ Primeable
    /\ quiet \in {q \in SUBSET Members : Cardinality(q) <= MaxQuiet}
    /\ hist = << <<"Init", [Params EXCEPT !.Quiet = quiet], Snap>> >>

TraceNext ==
    \/ \E m \in Members \ quiet, v \in Values : ReceiveVote(m, v) /\ Log("ReceiveVote", <<m, v>>)
    \/ \E h \in Honest \ quiet : HonestSign(h) /\ Log("HonestSign", <<h>>)
    \/ /\ Forged < MaxForged
       /\ \E p \in Byz \ quiet, m \in Members : ReceiveForged(p, m) /\ Log("ReceiveForged", <<p, m>>)
    \/ Len(hist) > DeadlineNotBefore /\ Deadline /\ Log("Deadline", <<>>)
    \/ Len(hist) > RemoveNotBefore /\ \E m \in Members : RemoveMember(m) /\ Log("RemoveMember", <<m>>)
    \/ StoreDown /\ Log("StoreDown", <<>>)
    \/ StoreUp /\ Log("StoreUp", <<>>)
    \/ \E s \in Submitters :
        \/ Acquire(s) /\ Log("Acquire", <<s>>)
        \/ Claim(s) /\ Log("Claim", <<s>>)
        \/ Sign(s) /\ Log("Sign", <<s>>)
        \/ Broadcast(s) /\ Log("Broadcast", <<s>>)
        \/ Confirm(s) /\ Log("Confirm", <<s>>)
        \/ Crash(s) /\ Log("Crash", <<s>>)
        \/ Recover(s) /\ Log("Recover", <<s>>)
    \/ ExpireCrashedLease /\ Log("ExpireCrashedLease", <<>>)
    \/ ExpireLiveLease /\ Log("ExpireLiveLease", <<>>)
    \/ ChainDown /\ Log("ChainDown", <<>>)
    \/ ChainUp /\ Log("ChainUp", <<>>)

TraceSpec == TraceInit /\ [][TraceNext]_<<vars, hist, quiet>>

\* Not a real invariant: prints each trace once, when it is TraceLen long.
PrintTrace == Len(hist) = TraceLen + 1 => PrintT(<<"TRACE", hist>>)

=============================================================================
