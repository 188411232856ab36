"""Exactly-once submission of consensus values to the ThresholdRecord contract (issue 6, R8, R11).

`submitter.core.Submitter` is the process loop; `submitter.fence` the etcd locks (fencing tokens)
and nonce reservations; `submitter.index` what the loop keeps from the log. Run it with
`python -m submitter --help`.
"""

from submitter.core import Submitter

__all__ = ["Submitter"]
