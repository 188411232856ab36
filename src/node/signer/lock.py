"""One process per journal on this machine: an flock on ``<journal>.lock`` naming its holder.

flock is released by the kernel when the holder dies, even by SIGKILL, so a crashed node never
leaves a lock an operator must clear by hand, and a stale pid in the file means nothing: only
the kernel's lock counts. The file is never unlinked (unlinking a lock file lets two processes
lock two different inodes of one name). Its descriptor is close-on-exec, so a child process
does not inherit, and keep, the lock after the node died.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import JournalPermissions, SignerLocked

_STARTED_MS = time.time_ns() // 1_000_000  # when this process loaded the signer: pid + this names a run


@dataclass(frozen=True, slots=True)
class Holder:
    """Who signs with a key: ``hostname:pid:start`` (start in Unix milliseconds)."""

    hostname: str
    pid: int
    started_ms: int

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), _STARTED_MS)

    def text(self) -> str:
        return f"{self.hostname}:{self.pid}:{self.started_ms}"

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        host, _, rest = text.strip().rpartition(":")
        host, _, pid = host.rpartition(":")
        if not host or not pid.isdigit() or not rest.isdigit():
            return None
        return cls(host, int(pid), int(rest))

    def describe(self) -> str:
        since = datetime.datetime.fromtimestamp(self.started_ms / 1000, datetime.UTC).isoformat(timespec="seconds")
        return f"pid {self.pid} on host {self.hostname} (running since {since})"


def describe(text: str) -> str:
    """A holder's text for an error message, readable even when it is not ours to parse."""
    h = Holder.parse(text)
    return h.describe() if h else f"an unknown process (holder record {text.strip()[:100]!r})"


class LocalLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: str | os.PathLike[str], holder: Holder | None = None) -> LocalLock:
        path = Path(path)
        holder = holder or Holder.me()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise JournalPermissions(f"{path}: cannot open the signer lock file: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            check_private(path, st, "signer lock file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 512, 0).decode(errors="replace")
                raise SignerLocked(
                    f"another process signs with this journal: {describe(text)} holds {path}; "
                    "only one process may sign with a trustee key at a time",
                    text.strip(),
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, (holder.text() + "\n").encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def check_private(path: Path, st: os.stat_result, what: str) -> None:
    """A regular file owned by us, read-write for us and nobody else (root ignores modes, so check the bits)."""
    if not stat.S_ISREG(st.st_mode):
        raise JournalPermissions(f"{path}: the {what} is not a regular file")
    if st.st_uid != os.geteuid():
        raise JournalPermissions(f"{path}: the {what} is owned by uid {st.st_uid}, not by us (uid {os.geteuid()})")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077 or mode & 0o600 != 0o600:
        raise JournalPermissions(f"{path}: the {what} has mode {mode:04o}; it must be 0600 (owner read-write only)")
