------------------------- MODULE ThresholdVoteTrace -------------------------
(***************************************************************************)
(* ThresholdVote with a history variable, for the conformance test         *)
(* (tests/tla/test_conformance.py).  TLC runs it in -simulate mode: every  *)
(* random behaviour records each step as <<action, arguments, state after>>  *)
(* and, when it reaches TraceLen steps, prints the whole trace.  The test  *)
(* replays each trace through the Python decider (events.rules.decide /    *)
(* evolve) and compares the two states after every step.                   *)
(***************************************************************************)
EXTENDS ThresholdVote, Sequences

CONSTANTS
    TraceLen,          \* steps per printed trace
    DeadlineNotBefore, \* scheduling only: the deadline waits this many steps
    MaxForged          \* scheduling only: at most this many forged messages per trace

\* The two scheduling knobs only prune behaviours (every trace is still a
\* behaviour of ThresholdVote): a uniform random walk otherwise spends its
\* steps on forgeries and early deadlines and seldom reaches the submitters.

VARIABLE hist

\* What the test compares (and the submitter's local view it needs to build
\* the commands).
Snap ==
    [tx      |-> txState,
     acc     |-> accepted,
     banned  |-> banned,
     removed |-> removed,
     viol    |-> violations,
     rep     |-> rep,
     dl      |-> deadlineFired,
     dec     |-> decided,
     cert    |-> certificate,
     subRev  |-> subRev,
     signed  |-> signedRaw,
     myRev   |-> myRev,
     myRaw   |-> myRaw]

Forged == Cardinality({i \in 1..Len(hist) : hist[i][1] = "ReceiveForged"})

Log(action, args) == hist' = Append(hist, <<action, args, Snap'>>)

TraceInit == Init /\ hist = << <<"Init", <<>>, Snap>> >>

TraceNext ==
    \/ \E m \in Members, v \in Values : ReceiveVote(m, v) /\ Log("ReceiveVote", <<m, v>>)
    \/ /\ Forged < MaxForged
       /\ \E p \in Byz, m \in Members : ReceiveForged(p, m) /\ Log("ReceiveForged", <<p, m>>)
    \/ Len(hist) > DeadlineNotBefore /\ Deadline /\ Log("Deadline", <<>>)
    \/ \E m \in Members : RemoveMember(m) /\ Log("RemoveMember", <<m>>)
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

TraceSpec == TraceInit /\ [][TraceNext]_<<vars, hist>>

\* Not a real invariant: prints each trace once, when it is TraceLen long.
PrintTrace == Len(hist) = TraceLen + 1 => PrintT(<<"TRACE", hist>>)

=============================================================================
