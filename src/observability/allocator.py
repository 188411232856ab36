"""glibc malloc settings for the long-running processes (node, projector, submitter): flat memory over time.

The soak (``bench/soak_bench.py --mode synthetic``) held a node's live Python data flat (pymalloc blocks,
``malloc_used_mb``) while its RSS crept up: the bytes glibc held free inside its arenas
(``mallinfo2().fordblks``) went from 5 MB to 12 MB over 100,000 transactions, in steps that came with the
store's stalls. glibc gives threads arenas of their own (up to 8 per core), which fragment apart; with at
most two the same run kept that figure at 3.0-3.7 MB through more stalls (docs/decisions.md, "Allocator:
two malloc arenas"). Two, not one: the main thread keeps its own heap and the others share one.

Set with ``mallopt`` at the start of each entry point, before its threads exist, rather than with the
``MALLOC_ARENA_MAX`` environment variable: every launcher (``tvote up``, compose, systemd, a shell) then
gets it, and the benchmark runs exactly what production runs. An operator's own ``MALLOC_ARENA_MAX`` wins.
"""

from __future__ import annotations

import ctypes
import os

ARENA_MAX = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_arenas(arenas: int = ARENA_MAX) -> bool:
    """Cap glibc's malloc arenas for this process; False where it does not apply (not glibc, or the
    operator set ``MALLOC_ARENA_MAX`` themselves)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
