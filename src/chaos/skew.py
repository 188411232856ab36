"""Run a ``python -c CODE args...`` command with the node's wall clock shifted: the clock-skew wrapper.

Why not libfaketime: Debian's libfaketime 0.9.10 breaks CPython 3.11 here. With the monotonic clock
faked (its default) ``threading.Event.wait`` and ``queue.Queue.get(timeout=)`` never return; with
``FAKETIME_DONT_FAKE_MONOTONIC=1`` ``time.sleep`` fails with EINVAL (its absolute ``clock_nanosleep``).
A node under either never becomes ready.

Why not a global ``time.time`` patch either: gRPC's Python layer turns a timeout into an absolute
deadline with ``time.time()`` and C-core checks it against the real clock, so a -5 s process makes
every etcd call time out at once (an artefact: under real skew both would read the same clock).

So the clocks the node's own code reads are shifted: ``recording.recorder.now_ms`` (vote timestamps, the
edge's age check, deadlines, ``CheckDeadline``) and the log writer's ``recorded_at``
(``events.postgres_store``). Monotonic clocks and libraries are left alone.

    [sys.executable, "-m", "chaos.skew", "+5000", "--", sys.executable, "-c", CODE, *args]
"""

from __future__ import annotations

import sys
import time


def install(offset_ms: int) -> None:
    """Shift the node's wall clock by ``offset_ms``; must run before ``node.service`` is imported."""
    import types

    import events.postgres_store as store
    import recording.recorder as recorder

    off_ns = offset_ms * 1_000_000
    skewed = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("__")})
    skewed.time_ns = lambda: time.time_ns() + off_ns
    skewed.time = lambda: (time.time_ns() + off_ns) / 1e9
    recorder.now_ms = lambda: skewed.time_ns() // 1_000_000
    store.time = skewed


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
