--------------------------- MODULE ThresholdVote ---------------------------
(***************************************************************************)
(* The threshold-vote protocol for ONE transaction, as RESOLUTIONS.md      *)
(* (R1-R14, with R9 as revised) defines it.  This is the project's own     *)
(* model; the TLA+ sketch in section 17 of the seed spec is not used (its  *)
(* invariants contradict its own rules, e.g. it never bans the minority    *)
(* voter it detects).                                                      *)
(*                                                                         *)
(* Two halves that share the event log of the transaction:                 *)
(*   1. the vote decider: every vote / forged message / deadline / operator *)
(*      removal is one atomic append to the transaction's stream (R13: the *)
(*      etcd CAS on the stream version serialises the deciders of all      *)
(*      nodes, so the log has one order and the decider sees it whole).    *)
(*      Honest members sign one value or stay silent (a crash); the log    *)
(*      (etcd + Postgres) can be down for a while, and a vote an honest    *)
(*      member signs meanwhile waits for it: so does the deadline (R9,     *)
(*      R14);                                                              *)
(*   2. the submitters: processes that take an etcd lease lock, fence     *)
(*      every log append with the lock revision recorded in                *)
(*      SubmissionStarted, record the signed raw transaction before        *)
(*      broadcasting it (R11), crash, recover, and can turn stale when     *)
(*      their lease expires while they are paused.                         *)
(* and a chain whose contract refuses a second write for the same id.     *)
(*                                                                         *)
(* Earlier transactions enter only through what they left on the cluster's *)
(* stream: each member's reputation (RepInit) and silent streak            *)
(* (StreakInit), in any combination.                                       *)
(*                                                                         *)
(* The constant Bug selects a deliberately wrong variant (non-vacuity):    *)
(* "none" is the protocol; the others must make TLC report a violation.   *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets, TLC

CONSTANTS
    Honest,        \* members that follow the protocol (may still crash = stay silent)
    Byz,           \* members that may double vote, vote a minority value, forge, or stay silent
    Values,        \* the values a vote can carry (2 are enough)
    HonestValue,   \* the value every honest member votes for
    NoVal,         \* "has not voted" (a model value outside Values)
    T,             \* the threshold t
    RepMax,        \* full reputation (the decider's 1000 milli-points)
    RepInit,       \* reputations a member may carry in from earlier transactions
    StreakInit,    \* silent streaks a member may carry in from earlier transactions
    Penalty,       \* reputation a silence on a consensus transaction costs (R9)
    Reward,        \* reputation a counted vote for the consensus value earns back (R9)
    Floor,         \* reputation floor (R9): operators are alerted below it ...
    FloorBanAfter, \* ... and, if > 0 (opt-in), a member silent on FloorBanAfter consensus
                   \* transactions in a row and below the floor is banned.  0: never.
    Submitters,    \* submitter processes racing for the lock
    NoSub,         \* "nobody holds the lock" (a model value outside Submitters)
    MaxRemovals,   \* bound: operator removals of members
    MaxCrashes,    \* bound: submitter crashes (in total)
    MaxExpiries,   \* bound: leases that expire under a live (paused) holder
    MaxOutages,    \* bound: times the chain becomes unreachable
    MaxStoreOutages, \* bound: times the log (etcd + Postgres) becomes unavailable
    ContractGuard, \* TRUE: the contract reverts a second write for the same id
    Bug            \* "none" | "banned_vote_counts" | "blame_claimed"
                   \*   | "no_fencing" | "abort_after_claim" | "lease_outlives_restart"
                   \*   | "blame_without_consensus" | "deadline_during_outage"

Members == Honest \cup Byz

ASSUME
    /\ Honest \cap Byz = {}
    /\ HonestValue \in Values
    /\ NoVal \notin Values
    /\ NoSub \notin Submitters
    /\ T \in 1..Cardinality(Members)
    \* t > N/2: two different values can never both hold t votes (the seed's
    \* configurations N=4,t=3 and N=5,t=4 satisfy it).
    /\ 2 * T > Cardinality(Members)
    \* Byzantine members alone cannot make a value reach t.
    /\ Cardinality(Byz) < T
    /\ RepMax \in Nat /\ RepInit \subseteq 0..RepMax /\ StreakInit \subseteq Nat
    /\ Penalty \in Nat /\ Reward \in Nat /\ Floor \in Nat /\ FloorBanAfter \in Nat
    /\ MaxStoreOutages \in Nat
    /\ Bug \in {"none", "banned_vote_counts", "blame_claimed", "no_fencing",
                "abort_after_claim", "lease_outlives_restart",
                "blame_without_consensus", "deadline_during_outage"}

\* Transaction states (names as in the Python decider's TxState).
Idle       == "IDLE"
Collecting == "COLLECTING"
Reached    == "THRESHOLD_REACHED"
Submitting == "SUBMITTING"
Confirmed  == "CONFIRMED"
AbortedByz == "ABORTED_BYZANTINE"
NoQuorum   == "ABORTED_NO_QUORUM"
Expired    == "EXPIRED"
TxStates == {Idle, Collecting, Reached, Submitting, Confirmed, AbortedByz, NoQuorum, Expired}

Abortable == {Collecting, Reached}          \* R8
Terminal  == {AbortedByz, NoQuorum, Expired} \* ends in which nothing is ever submitted

\* Violation kinds. The first three are Byzantine: only a member (or peer)
\* that misbehaved may ever get one (R14).  SILENT_FAILURE is not (R9).
ByzKinds   == {"DOUBLE_VOTING", "MINORITY_VOTE", "INVALID_SIGNATURE"}
ViolKinds  == ByzKinds \cup {"SILENT_FAILURE"}

\* Submitter program counter.
PCs == {"idle", "locked", "claimed", "signed", "sent", "down"}

VARIABLES
    \* --- the transaction's stream, as folded by evolve() ---
    txState,       \* one of TxStates
    accepted,      \* accepted[m]: m's accepted vote (VoteAccepted), or NoVal
    banned,        \* members banned (NodeBanned); each member is its own libp2p peer
    removed,       \* members removed by an operator (MemberRemoved)
    violations,    \* set of <<member, kind>> (ViolationDetected)
    rep,           \* rep[m]: reputation (ReputationChanged)
    streak,        \* streak[m]: consensus transactions m missed in a row (Member.silent_streak)
    deadlineFired, \* the deadline has fired (it fires once, R9)
    decided,       \* history: values a ThresholdReached was recorded for
    certificate,   \* members whose votes ThresholdReached counted
    subRev,        \* lock revision in the latest SubmissionStarted (0 = none): the fence
    signedRaw,     \* raw tx recorded by SubmissionSigned (0 = none)
    \* --- honest members' votes, outside the log ---
    inflight,      \* honest members whose vote, signed while the log was down, waits for it
    hsigned,       \* history: honest members that signed a vote before the deadline fired
    \* --- the log's stores (etcd + Postgres) ---
    logUp,         \* the log accepts appends
    \* --- etcd lock ---
    lockHolder,    \* submitter whose lease is alive, or NoSub
    lockRev,       \* etcd revision of the latest acquisition
    \* --- submitter processes (local, lost on crash) ---
    pc, myRev, myRaw,
    \* --- chain ---
    sigCount,      \* raw transactions ever signed (each gets a fresh nonce/hash)
    included,      \* raw transactions included on chain
    writes,        \* successful (non-reverted) record(txId, value) calls
    chainUp,
    \* --- bounded environment ---
    crashes, expiries, outages, storeOutages

\* The transaction's stream except its status.
streamVars == <<accepted, banned, removed, violations, rep, streak, deadlineFired,
                decided, certificate>>
voteVars   == <<txState, streamVars>>
honestVars == <<inflight, hsigned>>
subVars    == <<subRev, signedRaw, lockHolder, lockRev, pc, myRev, myRaw>>
chainVars  == <<sigCount, included, writes, chainUp>>
envVars    == <<crashes, expiries, outages, storeOutages>>
\* Everything a submitter step leaves alone.
notSubVars == <<voteVars, honestVars, logUp>>
vars == <<voteVars, honestVars, logUp, subVars, chainVars, envVars>>

Sub0(a, b) == IF a > b THEN a - b ELSE 0      \* reputation never goes below 0
Cap(a)     == IF a > RepMax THEN RepMax ELSE a \* ... nor above full

-----------------------------------------------------------------------------
(* The vote rules (R3-R10) as one pure function of the stream state.       *)

\* Members whose accepted vote for w counts toward w's quorum: only members
\* that are neither banned nor removed (R6, R10).  Bug "banned_vote_counts"
\* forgets the filter.
VotersFor(acc, out, w) ==
    IF Bug = "banned_vote_counts"
    THEN {m \in Members : acc[m] = w}
    ELSE {m \in Members \ out : acc[m] = w}

\* Members whose accepted vote names a value other than w.  All of them,
\* banned or removed ones included: R5 "every member whose accepted vote is
\* not w", R6 "no accepted vote names another value".
Dissenters(acc, w) == {m \in Members : acc[m] \notin {NoVal, w}}

\* R6: can w still reach t?  Its counted votes plus every counted member that
\* has not voted yet (a member that voted another value cannot switch
\* without being banned for a double vote).
CanReach(acc, out, w) ==
    Cardinality({m \in Members \ out : acc[m] \in {w, NoVal}}) >= T

\* After a stream change (accepted votes acc, bans bans0, removals rem, and
\* byz0 = this event already found a Byzantine violation), settle the
\* transaction: R5 minority check, R8 abort, R6 consensus or no quorum.
\* Returns the new txState, bans, new violations, decided, certificate.
\* (rules.py: _Decision.evaluate + abort_if_abortable.)
Settle(st, acc, bans0, rem, byz0) ==
    LET out0     == bans0 \cup rem
        heavy    == {w \in Values : Cardinality(VotersFor(acc, out0, w)) >= T}
        \* R5: whenever some w holds t counted votes, every counted dissenter
        \* is Byzantine, in whatever order the votes arrived.
        minority == UNION {Dissenters(acc, w) : w \in heavy}
        bans1    == bans0 \cup minority
        out1     == bans1 \cup rem
        byz      == byz0 \/ minority # {}
        st1      == IF byz /\ (st \in Abortable
                               \/ (Bug = "abort_after_claim" /\ st = Submitting))
                    THEN AbortedByz ELSE st
        \* R6: consensus (uniform), decided by the event that makes it true.
        cons     == {w \in heavy : Dissenters(acc, w) = {}}
        reach    == st1 = Collecting /\ cons # {}
        \* R6: no value can reach t any more -> ABORTED_NO_QUORUM, nobody blamed.
        noq      == st1 = Collecting /\ ~reach
                    /\ \A w \in Values : ~CanReach(acc, out1, w)
    IN [st    |-> IF reach THEN Reached ELSE IF noq THEN NoQuorum ELSE st1,
        bans  |-> bans1,
        viols |-> {<<m, "MINORITY_VOTE">> : m \in minority},
        dec   |-> IF reach THEN cons ELSE {},
        cert  |-> IF reach THEN VotersFor(acc, out1, CHOOSE w \in cons : TRUE)
                           ELSE certificate]

\* A Byzantine ban also drops the member's reputation to 0 (seed 3.3).
ApplySettle(r) ==
    /\ txState'     = r.st
    /\ banned'      = r.bans
    /\ rep'         = [m \in Members |-> IF m \in r.bans \ banned THEN 0 ELSE rep[m]]
    /\ decided'     = decided \cup r.dec
    /\ certificate' = r.cert

-----------------------------------------------------------------------------
(* Vote-side actions: deliveries in any order, any number of times.  Each  *)
(* one appends to the log, so none is enabled while the log is down.       *)

\* A vote with a valid signature from member m for value v reaches the
\* decider.  Honest members only ever sign HonestValue; Byzantine members sign
\* anything.  Nothing bounds how often a vote is delivered (duplicates).
\* For an honest member this step is its signature and its delivery at once
\* (with the log up, a vote reaches it well within the grace the deadline
\* leaves, so "signed before the deadline" and "in the log before the
\* deadline" coincide), unless it signed while the log was down (HonestSign):
\* then this step delivers that signed vote.
ReceiveVote(m, v) ==
    /\ logUp
    /\ m \in Honest => v = HonestValue
    /\ IF m \in banned \cup removed
       THEN UNCHANGED vars                 \* R10/R1: dropped at the network edge
       ELSE IF accepted[m] = v
       THEN UNCHANGED vars                 \* R3: the same vote again is idempotent
       ELSE IF accepted[m] = NoVal
       THEN \* VoteAccepted (the first vote opens the transaction)
            LET acc == [accepted EXCEPT ![m] = v]
                st  == IF txState = Idle THEN Collecting ELSE txState
                r   == Settle(st, acc, banned, removed, FALSE)
            IN /\ accepted' = acc
               /\ ApplySettle(r)
               /\ violations' = violations \cup r.viols
               /\ inflight' = inflight \ {m}
               /\ hsigned' = IF m \in Honest /\ ~deadlineFired THEN hsigned \cup {m}
                                                              ELSE hsigned
               /\ UNCHANGED <<removed, streak, deadlineFired>>
       ELSE \* R4: a second, different value: DOUBLE_VOTING, whatever the state.
            \* (Only a Byzantine member gets here: an honest one signs one value.)
            LET r == Settle(txState, accepted, banned \cup {m}, removed, TRUE)
            IN /\ ApplySettle(r)
               /\ violations' = violations \cup {<<m, "DOUBLE_VOTING">>} \cup r.viols
               /\ UNCHANGED <<accepted, removed, streak, deadlineFired, honestVars>>
    /\ UNCHANGED <<logUp, subVars, chainVars, envVars>>

\* R14 / R9's store outage: honest member h signs its vote (for HonestValue)
\* while the log is down.  The signature has left the process (kept durably
\* first, R14) and sits in h's outbox and its peers' gossip until the log is
\* writable again; then ReceiveVote(h, HonestValue) appends it.  A vote signed
\* after the deadline is a late vote, whatever the log: ReceiveVote covers it.
\* An honest member that never signs is one that crashed or stayed silent; a
\* vote lost before it left the process is the same as never signing.
HonestSign(h) ==
    /\ ~logUp
    /\ ~deadlineFired
    /\ h \notin banned \cup removed
    /\ accepted[h] = NoVal
    /\ h \notin inflight
    /\ inflight' = inflight \cup {h}
    /\ hsigned' = hsigned \cup {h}
    /\ UNCHANGED <<voteVars, logUp, subVars, chainVars, envVars>>

\* R7: a gossip message authored (envelope-signed) by peer p claims to carry
\* member m's vote, but m's signature does not verify.  The author peer is
\* blamed and banned, never the claimed member; the transaction is not aborted
\* (but the ban may leave too few members: R6 no quorum).  Only Byzantine
\* peers author such messages.  A message from a banned/removed author, or
\* in the name of a banned/removed member, is dropped at the edge first.
ReceiveForged(p, m) ==
    /\ logUp
    /\ p \in Byz
    /\ IF p \in banned \cup removed \/ m \in banned \cup removed
       THEN UNCHANGED vars                 \* dropped at the edge
       ELSE LET culprit == IF Bug = "blame_claimed" THEN m ELSE p
                r == Settle(txState, accepted, banned \cup {culprit}, removed, FALSE)
            IN /\ ApplySettle(r)
               /\ violations' = violations \cup {<<culprit, "INVALID_SIGNATURE">>}
                                           \cup r.viols
               /\ UNCHANGED <<accepted, removed, streak, deadlineFired>>
    /\ UNCHANGED <<honestVars, logUp, subVars, chainVars, envVars>>

\* Honest votes signed before the deadline that the log has not got yet (a
\* vote of a member banned or removed meanwhile would be dropped anyway).
Pending == inflight \ (banned \cup removed)

\* When the deadline may fire.  The shell asks the decider (CheckDeadline)
\* only with the log writable and after a grace long enough for every vote
\* signed before the deadline (during an outage: queued until the log came
\* back) to be appended: R9 "a vote signed before the deadline that reaches
\* the log within a grace after the log is writable again counts as on
\* time".  The model states this as an enabling condition, not a clock: the
\* deadline waits for the log and for every pending honest vote.
\* Bug "deadline_during_outage": the deadline is judged by the clock alone;
\* it fires during the outage, ahead of the votes still queued.
DeadlineMayFire ==
    \/ Bug = "deadline_during_outage"
    \/ logUp /\ Pending = {}

\* R9 as revised.  The deadline fires once.  If the transaction reached
\* consensus (a ThresholdReached is recorded: decided # {}; it may since be
\* SUBMITTING, CONFIRMED or ABORTED_BYZANTINE by a late violation), every
\* counted member (not banned, not removed) with no accepted vote is silent:
\* SILENT_FAILURE, Penalty off its reputation (not below 0) and its streak
\* + 1; every counted member whose accepted vote is the decided value earns
\* Reward back (not above RepMax) and its streak restarts at 0.  A silent
\* member is banned (REPUTATION_FLOOR, not a Byzantine violation: reputation
\* unchanged) only if the operator opted in (FloorBanAfter > 0), its
\* reputation after the penalty is below the floor and its streak, this
\* silence included, is >= FloorBanAfter.  If the transaction never reached
\* consensus nobody is blamed or rewarded; still collecting, it EXPIRES.
\* Bug "blame_without_consensus": silence is charged on any transaction (R9's
\* first reading), so one member opening transactions nobody else was asked
\* about drains every other member's reputation.
Deadline ==
    /\ txState # Idle
    /\ ~deadlineFired
    /\ DeadlineMayFire
    /\ LET counted  == Members \ (banned \cup removed)
           blaming  == decided # {} \/ Bug = "blame_without_consensus"
           silent   == IF blaming THEN {m \in counted : accepted[m] = NoVal} ELSE {}
           voters   == {m \in counted : accepted[m] \in decided}
           rep1     == [m \in Members |->
                          IF m \in silent THEN Sub0(rep[m], Penalty)
                          ELSE IF m \in voters THEN Cap(rep[m] + Reward)
                          ELSE rep[m]]
           streak1  == [m \in Members |->
                          IF m \in silent THEN streak[m] + 1
                          ELSE IF m \in voters THEN 0
                          ELSE streak[m]]
           floorBan == {m \in silent : /\ FloorBanAfter > 0
                                       /\ rep1[m] < Floor
                                       /\ streak1[m] >= FloorBanAfter}
       IN /\ deadlineFired' = TRUE
          /\ rep' = rep1
          /\ streak' = streak1
          /\ violations' = violations \cup {<<m, "SILENT_FAILURE">> : m \in silent}
          /\ banned' = banned \cup floorBan
          /\ txState' = IF txState = Collecting THEN Expired ELSE txState
    /\ UNCHANGED <<accepted, removed, decided, certificate, honestVars, logUp,
                   subVars, chainVars, envVars>>

\* An operator removes member m (audited command).  Removed members count
\* toward nothing (R6), so this can end a collecting transaction without
\* quorum.  The threshold stays t, so a removal must leave >= t eligible
\* members (rules.py refuses it otherwise).  The shell then asks the decider
\* to re-evaluate the open transaction (Reevaluate): folded in here.
RemoveMember(m) ==
    /\ logUp
    /\ Cardinality(removed) < MaxRemovals
    /\ m \notin removed
    /\ Cardinality(Members \ (banned \cup removed \cup {m})) >= T
    /\ LET r == Settle(txState, accepted, banned, removed \cup {m}, FALSE)
       IN /\ removed' = removed \cup {m}
          /\ ApplySettle(r)
          /\ violations' = violations \cup r.viols
    /\ UNCHANGED <<accepted, streak, deadlineFired, honestVars, logUp,
                   subVars, chainVars, envVars>>

\* The log's stores (etcd, Postgres) become unavailable, and come back.
\* While down nothing is appended: no vote, no deadline, no removal, no
\* claim/sign/confirm; honest members may still sign (HonestSign).  An
\* outage starts only before the deadline: after it, an outage could only
\* hold appends back (HonestSign needs ~deadlineFired), which the other
\* interleavings already cover; this keeps the state space down.
StoreDown ==
    /\ logUp /\ storeOutages < MaxStoreOutages
    /\ ~deadlineFired
    /\ logUp' = FALSE /\ storeOutages' = storeOutages + 1
    /\ UNCHANGED <<voteVars, honestVars, subVars, chainVars, crashes, expiries, outages>>

StoreUp ==
    /\ ~logUp /\ logUp' = TRUE
    /\ UNCHANGED <<voteVars, honestVars, subVars, chainVars, envVars>>

-----------------------------------------------------------------------------
(* Submitters, etcd lease lock, chain.                                      *)

Release(s) == lockHolder' = IF lockHolder = s THEN NoSub ELSE lockHolder

\* The lock is free: s takes it; etcd gives the acquisition a new revision.
Acquire(s) ==
    /\ pc[s] = "idle"
    /\ txState \in {Reached, Submitting}
    /\ lockHolder = NoSub
    /\ lockHolder' = s
    /\ lockRev' = lockRev + 1
    /\ myRev' = [myRev EXCEPT ![s] = lockRev + 1]
    /\ pc' = [pc EXCEPT ![s] = "locked"]
    /\ UNCHANGED <<notSubVars, subRev, signedRaw, myRaw, chainVars, envVars>>

\* SubmissionStarted(rev): appended only if the transaction is still
\* claimable and rev is newer than any recorded claim (a stale holder's claim
\* is refused).  After it the transaction can no longer be aborted (R8).
\* Recovery: if a signed raw transaction is already recorded, the new holder
\* adopts it (re-broadcast / look up), it never signs a second one.  Like
\* every log append (also Sign and Confirm) it waits while the log is down.
Claim(s) ==
    /\ pc[s] = "locked"
    /\ logUp
    /\ IF txState \in {Reached, Submitting} /\ myRev[s] > subRev
       THEN /\ subRev' = myRev[s]
            /\ txState' = Submitting
            /\ IF signedRaw # 0
               THEN /\ pc' = [pc EXCEPT ![s] = "signed"]
                    /\ myRaw' = [myRaw EXCEPT ![s] = signedRaw]
               ELSE /\ pc' = [pc EXCEPT ![s] = "claimed"]
                    /\ UNCHANGED myRaw
            /\ UNCHANGED lockHolder
       ELSE /\ pc' = [pc EXCEPT ![s] = "idle"]   \* aborted, done or fenced out
            /\ Release(s)
            /\ UNCHANGED <<txState, subRev, myRaw>>
    /\ UNCHANGED <<streamVars, honestVars, logUp, signedRaw, lockRev, myRev,
                   chainVars, envVars>>

\* Sign a raw transaction (fresh nonce) and append SubmissionSigned BEFORE
\* broadcasting (R11).  The append is fenced: refused unless s's revision is
\* the recorded one and nothing is signed yet; a refused signature is
\* thrown away, never broadcast.  Bug "no_fencing": the submitter ignores the
\* refusal and goes on to broadcast what it signed.
Sign(s) ==
    /\ pc[s] = "claimed"
    /\ logUp
    /\ LET fenceOk == myRev[s] = subRev /\ signedRaw = 0 /\ txState = Submitting
           raw     == sigCount + 1
       IN IF fenceOk \/ Bug = "no_fencing"
          THEN /\ sigCount' = raw
               /\ myRaw' = [myRaw EXCEPT ![s] = raw]
               /\ pc' = [pc EXCEPT ![s] = "signed"]
               /\ signedRaw' = IF fenceOk THEN raw ELSE signedRaw
               /\ UNCHANGED lockHolder
          ELSE /\ pc' = [pc EXCEPT ![s] = "idle"]
               /\ Release(s)
               /\ UNCHANGED <<sigCount, myRaw, signedRaw>>
    /\ UNCHANGED <<notSubVars, subRev, lockRev, myRev, included, writes, chainUp, envVars>>

\* Broadcast the raw transaction s holds.  No fence check here on purpose:
\* any check before a send to the chain can pass and then go stale, so the
\* model lets a stale holder broadcast; safety must come from every holder
\* only ever holding THE recorded raw transaction.  The chain includes a raw
\* transaction once (same hash); record(txId, value) succeeds unless the
\* contract already holds a record for the id (ContractGuard).  The chain is
\* not the log: a broadcast goes out while the log is down (its
\* SubmissionBroadcast record changes nothing the decider reads).
Broadcast(s) ==
    /\ pc[s] = "signed"
    /\ chainUp
    /\ LET raw == myRaw[s]
       IN /\ included' = included \cup {raw}
          /\ writes' = IF raw \in included THEN writes
                       ELSE IF ContractGuard /\ writes > 0 THEN writes \* reverted
                       ELSE writes + 1
    /\ pc' = [pc EXCEPT ![s] = "sent"]
    /\ UNCHANGED <<notSubVars, subRev, signedRaw, lockHolder, lockRev, myRev, myRaw,
                   sigCount, chainUp, envVars>>

\* The receipt is there: append SubmissionConfirmed (fenced) and release.
Confirm(s) ==
    /\ pc[s] = "sent"
    /\ logUp
    /\ chainUp
    /\ myRaw[s] \in included
    /\ IF myRev[s] = subRev /\ txState = Submitting
       THEN txState' = Confirmed
       ELSE UNCHANGED txState                     \* stale: the new holder confirms
    /\ pc' = [pc EXCEPT ![s] = "idle"]
    /\ Release(s)
    /\ UNCHANGED <<streamVars, honestVars, logUp, subRev, signedRaw, lockRev, myRev, myRaw,
                   chainVars, envVars>>

\* A submitter crashes at any step: its local state is lost, its lease lives
\* on until it expires.
Crash(s) ==
    /\ crashes < MaxCrashes
    /\ pc[s] # "down"
    /\ crashes' = crashes + 1
    /\ pc' = [pc EXCEPT ![s] = "down"]
    /\ myRev' = [myRev EXCEPT ![s] = 0]
    /\ myRaw' = [myRaw EXCEPT ![s] = 0]
    /\ UNCHANGED <<notSubVars, subRev, signedRaw, lockHolder, lockRev, chainVars,
                   expiries, outages, storeOutages>>

Recover(s) ==
    /\ pc[s] = "down"
    /\ pc' = [pc EXCEPT ![s] = "idle"]
    /\ UNCHANGED <<notSubVars, subRev, signedRaw, lockHolder, lockRev, myRev, myRaw,
                   chainVars, envVars>>

\* The lease of a crashed holder runs out (also once the process has
\* restarted: the new incarnation does not keep the old lease alive).  Bug
\* "lease_outlives_restart": the restarted process keeps the old lease alive
\* without knowing it holds the lock, and nobody ever submits.
ExpireCrashedLease ==
    /\ lockHolder # NoSub
    /\ pc[lockHolder] \in IF Bug = "lease_outlives_restart" THEN {"down"} ELSE {"down", "idle"}
    /\ lockHolder' = NoSub
    /\ UNCHANGED <<notSubVars, subRev, signedRaw, lockRev, pc, myRev, myRaw,
                   chainVars, envVars>>

\* The lease of a LIVE holder runs out (GC pause, partition from etcd): the
\* holder does not know and carries on: a stale holder.
ExpireLiveLease ==
    /\ expiries < MaxExpiries
    /\ lockHolder # NoSub
    /\ pc[lockHolder] \notin {"down", "idle"}
    /\ lockHolder' = NoSub
    /\ expiries' = expiries + 1
    /\ UNCHANGED <<notSubVars, subRev, signedRaw, lockRev, pc, myRev, myRaw,
                   chainVars, crashes, outages, storeOutages>>

ChainDown ==
    /\ chainUp /\ outages < MaxOutages
    /\ chainUp' = FALSE /\ outages' = outages + 1
    /\ UNCHANGED <<notSubVars, subVars, sigCount, included, writes, crashes, expiries,
                   storeOutages>>

ChainUp ==
    /\ ~chainUp /\ chainUp' = TRUE
    /\ UNCHANGED <<notSubVars, subVars, sigCount, included, writes, envVars>>

-----------------------------------------------------------------------------

Init ==
    /\ txState = Idle
    /\ accepted = [m \in Members |-> NoVal]
    /\ banned = {} /\ removed = {}
    /\ violations = {}
    /\ rep \in [Members -> RepInit]       \* what earlier transactions left: any
    /\ streak \in [Members -> StreakInit] \* combination (an over-approximation)
    /\ deadlineFired = FALSE
    /\ decided = {} /\ certificate = {}
    /\ inflight = {} /\ hsigned = {}
    /\ logUp = TRUE
    /\ subRev = 0 /\ signedRaw = 0
    /\ lockHolder = NoSub /\ lockRev = 0
    /\ pc = [s \in Submitters |-> "idle"]
    /\ myRev = [s \in Submitters |-> 0]
    /\ myRaw = [s \in Submitters |-> 0]
    /\ sigCount = 0 /\ included = {} /\ writes = 0 /\ chainUp = TRUE
    /\ crashes = 0 /\ expiries = 0 /\ outages = 0 /\ storeOutages = 0

VoteNext ==
    \/ \E m \in Members, v \in Values : ReceiveVote(m, v)
    \/ \E h \in Honest : HonestSign(h)
    \/ \E p \in Byz, m \in Members : ReceiveForged(p, m)
    \/ Deadline
    \/ \E m \in Members : RemoveMember(m)
    \/ StoreDown \/ StoreUp

SubmitNext ==
    \/ \E s \in Submitters :
        \/ Acquire(s) \/ Claim(s) \/ Sign(s) \/ Broadcast(s) \/ Confirm(s)
        \/ Crash(s) \/ Recover(s)
    \/ ExpireCrashedLease \/ ExpireLiveLease \/ ChainDown \/ ChainUp

Next == VoteNext \/ SubmitNext

Spec == Init /\ [][Next]_vars

\* Fairness: the service's own processes keep taking steps, crashed ones come
\* back, the lease of a crashed holder runs out, the chain and the log come
\* back.  Nothing is assumed of voters (a transaction may never reach
\* consensus) nor of the deadline.
Fairness ==
    /\ \A s \in Submitters :
        /\ WF_vars(Acquire(s)) /\ WF_vars(Claim(s)) /\ WF_vars(Sign(s))
        /\ WF_vars(Broadcast(s)) /\ WF_vars(Confirm(s)) /\ WF_vars(Recover(s))
    /\ WF_vars(ExpireCrashedLease)
    /\ WF_vars(ChainUp)
    /\ WF_vars(StoreUp)

FairSpec == Spec /\ Fairness

-----------------------------------------------------------------------------
(* Invariants.                                                              *)

TypeOK ==
    /\ txState \in TxStates
    /\ accepted \in [Members -> Values \cup {NoVal}]
    /\ banned \subseteq Members /\ removed \subseteq Members
    /\ violations \subseteq Members \X ViolKinds
    /\ rep \in [Members -> 0..RepMax]
    /\ streak \in [Members -> Nat]
    /\ deadlineFired \in BOOLEAN
    /\ decided \subseteq Values /\ certificate \subseteq Members
    /\ inflight \subseteq hsigned /\ hsigned \subseteq Honest
    /\ logUp \in BOOLEAN
    /\ subRev \in Nat /\ signedRaw \in Nat
    /\ lockHolder \in Submitters \cup {NoSub} /\ lockRev \in Nat
    /\ pc \in [Submitters -> PCs]
    /\ myRev \in [Submitters -> Nat] /\ myRaw \in [Submitters -> Nat]
    /\ sigCount \in Nat /\ included \subseteq 1..sigCount /\ writes \in Nat
    /\ chainUp \in BOOLEAN
    /\ storeOutages \in 0..MaxStoreOutages

\* At most one value reaches consensus per transaction: ThresholdReached is
\* recorded at most once, for one value.
AtMostOneValueDecided == Cardinality(decided) <= 1

\* Consensus only with >= t accepted votes for one value: the certificate
\* (the votes ThresholdReached counted) has t members, all of which voted the
\* decided value.  Accepted votes never change, so this holds forever after.
ConsensusHasQuorum ==
    \A w \in decided :
        /\ Cardinality(certificate) >= T
        /\ \A m \in certificate : accepted[m] = w

\* R9 as revised: silence is charged only on a transaction that reached
\* consensus (t members found it real); one that never did accuses nobody.
SilenceOnlyOnConsensus ==
    \A vk \in violations : vk[2] = "SILENT_FAILURE" => decided # {}

\* R14, the part about silence: SILENT_FAILURE is recorded against an honest
\* member only for a transaction it really did not vote on in time: it never
\* signed a vote for it before the deadline, although the log may have been
\* down and its vote queued meanwhile.
HonestSilenceIsReal ==
    \A h \in Honest : <<h, "SILENT_FAILURE">> \in violations => h \notin hsigned

\* R14 "only the guilty are banned".  Whatever crashes, restarts, store
\* outages, stale submitters and Byzantine members (fewer than t) do:
\*  - no honest member ever gets a Byzantine violation (DOUBLE_VOTING,
\*    MINORITY_VOTE, INVALID_SIGNATURE), in particular not for a message
\*    forged in its name (R7);
\*  - an honest member gets SILENT_FAILURE only on a transaction that reached
\*    consensus and that it did not sign a vote for before the deadline;
\*  - an honest member is banned only by the opt-in floor ban: never with
\*    FloorBanAfter = 0 (the default), and otherwise only after a silence
\*    (so it crashed or stayed silent), below the floor, with a streak of at
\*    least FloorBanAfter (its ban is REPUTATION_FLOOR: it has no Byzantine
\*    violation to be banned for).
NoHonestBlamed ==
    /\ \A vk \in violations : vk[2] \in ByzKinds => vk[1] \notin Honest
    /\ \A h \in Honest : <<h, "SILENT_FAILURE">> \in violations =>
          /\ decided # {}
          /\ h \notin hsigned
    /\ \A h \in banned \cap Honest :
          /\ FloorBanAfter > 0
          /\ <<h, "SILENT_FAILURE">> \in violations
          /\ rep[h] < Floor
          /\ streak[h] >= FloorBanAfter

\* Not an invariant of every configuration: with the floor ban off it
\* follows from NoHonestBlamed; with it opted in, TLC must find it violated
\* (MC_reach_honest_floor_ban.cfg), or NoHonestBlamed's allowance for a
\* crashed honest member's floor ban would be checked on nothing.
HonestNeverBanned == banned \cap Honest = {}

\* An aborted (or expired) transaction is never claimed, signed, or written.
AbortedNeverSubmitted ==
    txState \in Terminal =>
        /\ subRev = 0 /\ sigCount = 0 /\ included = {} /\ writes = 0

\* R11: at most one successful chain write per transaction, even with a stale
\* lock holder and crashes in every step.
AtMostOneChainWrite == writes <= 1

\* R11: never a second signed raw transaction for the same id.  Stronger
\* than AtMostOneChainWrite: it does not lean on the contract's guard.
AtMostOneSignedTx == sigCount <= 1

\* Only a transaction that reached consensus is ever claimed or written, and
\* CONFIRMED means the write is on chain.
OnlyConsensusWritten ==
    /\ (subRev > 0 \/ writes > 0) => decided # {}
    /\ txState = Confirmed => writes = 1

\* Banned (or removed) members never count toward a quorum: the members
\* ThresholdReached counted were all still counted members at that moment.
\* (Checked on the deciding step, as an action property.)
BannedNeverCounted ==
    [][decided' # decided => certificate' \cap (banned' \cup removed') = {}]_vars

\* Consensus is uniform (R6): when ThresholdReached is recorded for w, w holds
\* >= t votes of counted members and no accepted vote names another value.
ConsensusUniform ==
    [][(\A w \in decided' \ decided :
          /\ Cardinality({m \in Members \ (banned' \cup removed') : accepted'[m] = w}) >= T
          /\ \A m \in Members : accepted'[m] \in {NoVal, w})]_vars

\* An abort is final (R8), and so are the other terminal states.
AbortFinal == [][(txState \in Terminal) => txState' = txState]_vars

\* Consensus is recorded once: the decided value never changes.
DecisionStable == [][decided # {} => decided' = decided]_vars

\* The deadline fires once (R9).
DeadlineOnce == [][deadlineFired => deadlineFired' = TRUE]_vars

-----------------------------------------------------------------------------
(* Liveness (checked under FairSpec, without symmetry).                     *)

\* A transaction that reached consensus is eventually written on chain and
\* confirmed in the log, unless a late Byzantine vote aborted it before any
\* submitter claimed it (R5 + R8).  Chain outages are finite (MaxOutages).
ConsensusEventuallyWritten ==
    (decided # {}) ~> ((txState = Confirmed /\ writes = 1) \/ txState = AbortedByz)

\* Once claimed, it is always written: claims cannot be aborted (R8).
ClaimedEventuallyWritten ==
    (txState = Submitting) ~> (txState = Confirmed /\ writes = 1)

-----------------------------------------------------------------------------
(* Model-checking helpers.                                                  *)

\* Symmetry: honest members are interchangeable, so are Byzantine members,
\* so are submitters.  (Values are not: HonestValue is special.)
Symmetry ==
    {p @@ q @@ r : p \in Permutations(Honest), q \in Permutations(Byz),
                   r \in Permutations(Submitters)}

=============================================================================
