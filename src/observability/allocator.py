"""glibc malloc settings for the long-running processes (node, projector, submitter): flat memory over time.

The soak (``bench/soak_bench.py --mode synthetic``) held a node's live data flat (pymalloc blocks, glibc's
bytes in use) while the bytes glibc held free (``mallinfo2().fordblks``) rose from 3 MB to 12.6 MB over
220,000 transactions, in steps of 2.5 MB: the size of the vote memo's dict table (2,621,528 bytes). A dict
under churn (a bounded memo, the ledger's tables) allocates a new table at each resize, even one of the
same size, copies, and frees the old. glibc serves large blocks with mmap, given back on free, but its
*dynamic* threshold rises to the size of any mmapped block freed: after the first such free, same-size
tables come from the heap, and each leaves a hole that the next one, requested before the old is freed,
does not fit. Holding the threshold fixed (which turns the dynamic rule off) keeps every large table in a
mapping of its own, returned when freed (docs/decisions.md, "Allocator").

Why 1 MiB and not glibc's initial 128 KiB: at 128 KiB the many short-lived buffers of 128 KiB-1 MiB (reads,
encodings, result sets) each cost an mmap and a munmap, and an N=10 load point measured ~10-15 % more trustee
CPU per consensus in four A/B pairs. At 1 MiB only the tables that churn (the memo's 2.5 MB, growing ones)
get mappings: the same flat RSS in the 1 M-transaction soak, and no CPU cost measured.

Set with ``mallopt`` at the start of each entry point rather than with ``MALLOC_MMAP_THRESHOLD_``: every
launcher (``tvote up``, compose, systemd, a shell) then gets it, and the benchmark runs exactly what
production runs. An operator's own ``MALLOC_MMAP_THRESHOLD_`` wins.
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def hold_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve blocks of ``threshold`` bytes or more with mmap for the whole run (no dynamic threshold);
    False where it does not apply (not glibc, or the operator set ``MALLOC_MMAP_THRESHOLD_`` themselves)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
