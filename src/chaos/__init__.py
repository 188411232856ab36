"""Chaos suite (issue 8): fault scenarios on a real local cluster and the invariants checked after each.

``chaos.invariants`` reads the log, the projections and the chain after a run; ``chaos.harness``
starts the servers, drives load and injects faults; ``chaos.scenarios`` holds the seed's section
14.2 scenarios, each returning figures (recovery time, votes and transactions lost).
"""
