"""Run a ``python -c CODE args...`` command with its wall clock shifted: the clock-skew scenario's wrapper.

Why not libfaketime alone: Debian's libfaketime 0.9.10 breaks CPython 3.11 here. With the monotonic
clock faked (its default) ``threading.Event.wait`` and ``queue.Queue.get(timeout=)`` never return;
with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` ``time.sleep`` fails with EINVAL (its absolute
``clock_nanosleep``). A node under either never becomes ready. So the skew is applied in the process:
``time.time`` and ``time.time_ns`` (every clock the node's code reads: vote timestamps, deadlines,
``recorded_at``) are offset; the monotonic clock is left alone, as real skew would leave it.

    [sys.executable, "-m", "chaos.skew", "+5000", "--", sys.executable, "-c", CODE, *args]
"""

from __future__ import annotations

import sys
import time


def install(offset_ms: int) -> None:
    """Shift this process's wall clock (Python level) by ``offset_ms``."""
    real_ns, off_ns = time.time_ns, offset_ms * 1_000_000
    time.time_ns = lambda: real_ns() + off_ns
    time.time = lambda: (real_ns() + off_ns) / 1e9


def wrapper(offset_ms: int) -> list[str]:
    """The argv prefix for ``Trustee.wrapper``."""
    return [sys.executable, "-m", "chaos.skew", f"{offset_ms:+d}", "--"]


def main(argv: list[str]) -> None:
    offset, sep, *cmd = argv
    if sep != "--" or len(cmd) < 3 or cmd[1] != "-c":
        raise SystemExit("usage: python -m chaos.skew +MS -- PYTHON -c CODE [ARGS...]")
    install(int(offset))
    code = cmd[2]
    sys.argv = ["-c", *cmd[3:]]
    exec(compile(code, "<chaos.skew>", "exec"), {"__name__": "__main__"})  # our own argv, from TrusteeCluster


if __name__ == "__main__":
    main(sys.argv[1:])
