"""A private anvil (local Ethereum node) on loopback, started and stopped by the project.

Why: the exactly-once tests (issue 6, R11) need a real chain that can be killed and brought back
with its state, on a free port, with deterministic funded accounts, and without stray processes
left behind. The binary comes from the npm package `@foundry-rs/anvil` (platform sub-package,
installed by `npm ci` at the repo root); nothing is downloaded at run time.

    with Anvil(state_path=tmp / "anvil.json") as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        w3.eth.block_number   # use the chain
        node.stop()   # SIGTERM: anvil dumps its state to state_path
        node.start()  # same port, state loaded back

    python -m devstack.anvil --block-time 1 --state .state/anvil.json   # run one in the foreground

On a test network (devstack.netns): ``Anvil(host=h.ip, prefix=h.prefix)`` listens on that host's address
and starts through the prefix (``ip netns exec <ns>``); readiness is probed through the prefix too. A
non-loopback ``host`` is accepted only with a prefix: anvil is never exposed on the machine's own network.
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

# Anvil's (and Hardhat's) well-known development mnemonic: accounts are the same on every run.
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_CHAIN_ID = 31337
ANVIL_VERSION = "1.7.1"  # pinned in package.json

_LISTENING = re.compile(r"Listening on ([0-9.]+):(\d+)")
_LIVE: weakref.WeakSet[Anvil] = weakref.WeakSet()


def dev_private_key(index: int, mnemonic: str = DEFAULT_MNEMONIC) -> str:
    """Private key (0x hex) of anvil's dev account `index` (BIP44 path m/44'/60'/0'/0/index).

    Derived rather than hard-coded so a different mnemonic gives matching keys.
    """
    from eth_account import Account  # lazy: the node launcher itself needs only the stdlib

    Account.enable_unaudited_hdwallet_features()
    return "0x" + Account.from_mnemonic(
        mnemonic, account_path=f"m/44'/60'/0'/0/{index}"
    ).key.hex().removeprefix("0x")


class AnvilError(RuntimeError):
    """Anvil could not be found, started or reached."""


def _platform_package() -> str:
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(sys.platform, sys.platform)
    return f"anvil-{system}-{arch}"


def find_anvil() -> Path:
    """Locate the anvil binary: $ANVIL_BIN, else node_modules of the repo (or of a parent of cwd).

    The platform sub-package's binary is used directly rather than the `node_modules/.bin/anvil`
    node wrapper, so the pid we hold is anvil's own and signals (state dump on SIGTERM) reach it.
    """
    env = os.environ.get("ANVIL_BIN")
    if env:
        path = Path(env)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise AnvilError(f"ANVIL_BIN={env} is not an executable file")
        return path
    name = "anvil.exe" if sys.platform == "win32" else "anvil"
    rel = Path("node_modules") / "@foundry-rs" / _platform_package() / "bin" / name
    roots = [Path(__file__).resolve().parents[2], *Path.cwd().resolve().parents, Path.cwd().resolve()]
    for root in roots:
        candidate = root / rel
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise AnvilError(
        f"anvil binary not found (looked for {rel} under {roots[0]} and cwd): run `npm ci` at the repo "
        "root (package.json pins @foundry-rs/anvil), or set ANVIL_BIN"
    )


def rpc(url: str, method: str, params: list[object] | None = None, timeout: float = 2.0) -> object:
    """One JSON-RPC call with the standard library (used before web3 is involved)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise AnvilError(f"{method}: {reply['error']}")
    return reply["result"]


class Anvil:
    """One anvil process on 127.0.0.1; restartable on the same port, optionally with its state.

    State: with `state_path`, anvil loads the file at start if it exists and writes it on a clean
    stop (SIGTERM). `state_interval` also dumps it every N seconds, so a SIGKILL (`kill()`) loses at
    most the last N seconds, as a real node crash would lose unflushed data.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        block_time: float | None = None,
        no_mining: bool = False,
        state_path: str | os.PathLike[str] | None = None,
        state_interval: int | None = None,
        mnemonic: str = DEFAULT_MNEMONIC,
        accounts: int = 10,
        balance_ether: int = 10_000,
        chain_id: int = DEFAULT_CHAIN_ID,
        binary: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
        extra_args: list[str] | None = None,
        prefix: Sequence[str] | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            if not prefix:  # a non-loopback address only inside a namespace (a test network host's prefix)
                raise ValueError("anvil is only run on loopback")
            if not _is_ipv4(host):
                raise ValueError(f"anvil behind a prefix needs the host's IPv4 address, not {host!r}")
        if block_time is not None and no_mining:
            raise ValueError("block_time and no_mining are exclusive")
        self.host = host
        self.port = port
        self.block_time = block_time
        self.no_mining = no_mining
        self.state_path = Path(state_path) if state_path is not None else None
        self.state_interval = state_interval
        self.mnemonic = mnemonic
        self.accounts = accounts
        self.balance_ether = balance_ether
        self.chain_id = chain_id
        self.binary = Path(binary) if binary is not None else None
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.prefix = list(prefix or [])  # argv prefix it starts through, e.g. ``ip netns exec <ns>``
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- public API -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """HTTP JSON-RPC endpoint; valid once started (and across restarts: the port is kept)."""
        if self.port is None:
            raise AnvilError("anvil not started yet")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="anvil-")
            self._log_path = Path(self._tmpdir.name) / "anvil.log"
        return self._log_path

    def private_key(self, index: int) -> str:
        """Private key of funded dev account `index` of this node's mnemonic."""
        if not 0 <= index < self.accounts:
            raise ValueError(f"dev account {index} out of range (accounts={self.accounts})")
        return dev_private_key(index, self.mnemonic)

    def command(self) -> list[str]:
        """The anvil command line this instance runs."""
        binary = self.binary or find_anvil()
        args = [
            str(binary),
            "--host", self.host,
            "--port", str(self.port if self.port is not None else 0),
            "--chain-id", str(self.chain_id),
            "--mnemonic", self.mnemonic,
            "--accounts", str(self.accounts),
            "--balance", str(self.balance_ether),
        ]  # fmt: skip
        if self.block_time is not None:
            args += ["--block-time", _num(self.block_time)]
        if self.no_mining:
            args.append("--no-mining")
        if self.state_path is not None:
            args += ["--state", str(self.state_path)]
            if self.state_interval is not None:
                args += ["--state-interval", str(self.state_interval)]
        return args + self.extra_args

    def start(self) -> str:
        """Start anvil, wait until it answers eth_chainId with the configured id, return its URL."""
        if self.running:
            return self.url
        if self.state_path is not None:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [*self.prefix, *self.command()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our own process group: a terminal ^C does not reach it twice
            )
        _LIVE.add(self)
        try:
            self._wait_ready(log_path, offset)
        except BaseException:
            self.kill()
            raise
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        """Clean stop: SIGTERM (anvil writes its state file), then SIGKILL if it hangs."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Crash it: SIGKILL, no state dump beyond what `state_interval` already wrote."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None

    def restart(self) -> str:
        """Clean stop then start on the same port (with state, if a state_path is set)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and remove the temporary log directory, if we made one."""
        self.stop()
        _LIVE.discard(self)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
            self._log_path = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Anvil(url={self.url if self.port else None!r}, pid={self.pid}, running={self.running})"

    # -- internals --------------------------------------------------------------------------------

    def _wait_ready(self, log_path: Path, offset: int) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AnvilError(
                    f"anvil exited with code {self._proc.returncode} during start-up:\n"
                    f"{_tail(log_path, offset)}"
                )
            if self.port is None:
                match = _LISTENING.search(_read_from(log_path, offset))
                if match is None:
                    time.sleep(0.02)
                    continue
                self.port = int(match.group(2))
            try:
                chain_id = self._chain_id()
            except (OSError, urllib.error.URLError, AnvilError, ValueError, subprocess.TimeoutExpired):
                time.sleep(0.02)
                continue
            if chain_id != self.chain_id:
                raise AnvilError(
                    f"anvil at {self.url} answered chain id {chain_id}, expected {self.chain_id}"
                )
            return
        raise AnvilError(f"anvil not ready after {self.startup_timeout}s:\n{_tail(log_path, offset)}")

    def _chain_id(self) -> int:
        if not self.prefix:
            return int(str(rpc(self.url, "eth_chainId", timeout=1.0)), 16)
        # From inside the prefix (this process may not reach self.host): the same call in a stdlib-only child.
        p = subprocess.run([*self.prefix, sys.executable, "-I", "-c", _PROBE, self.url], capture_output=True,
                           text=True, timeout=5)
        if p.returncode != 0:
            raise AnvilError(f"probe failed: {p.stderr.strip()[-200:]}")
        return int(p.stdout.strip(), 16)


_PROBE = (
    "import json, sys, urllib.request as u\n"
    "r = u.Request(sys.argv[1], data=b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\",\"params\":[]}',"
    " headers={'Content-Type': 'application/json'})\n"
    "print(json.loads(u.urlopen(r, timeout=1).read())['result'])\n"
)


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _tail(path: Path, offset: int, lines: int = 30) -> str:
    return "\n".join(_read_from(path, offset).splitlines()[-lines:])


@atexit.register
def _reap() -> None:
    """Last resort against stray anvils when a caller forgot stop() (e.g. a test crashed)."""
    for node in list(_LIVE):
        node.kill()


def main(argv: list[str] | None = None) -> int:
    """Run one anvil in the foreground until ^C / SIGTERM; prints its URL."""
    parser = argparse.ArgumentParser(description="Run the project's private anvil on loopback.")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--block-time", type=float, default=None, help="seconds per block (default: automine)"
    )
    parser.add_argument("--state", default=None, help="state file: loaded at start, written at stop")
    parser.add_argument("--state-interval", type=int, default=None, help="also dump the state every N s")
    parser.add_argument("--chain-id", type=int, default=DEFAULT_CHAIN_ID)
    args = parser.parse_args(argv)
    node = Anvil(
        port=args.port,
        block_time=args.block_time,
        state_path=args.state,
        state_interval=args.state_interval,
        chain_id=args.chain_id,
    )
    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    node.start()
    print(node.url, flush=True)
    print(f"log: {node.log_path}", file=sys.stderr, flush=True)
    try:
        while not stop and node.running:
            time.sleep(0.2)
    finally:
        node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "ANVIL_VERSION",
    "DEFAULT_CHAIN_ID",
    "DEFAULT_MNEMONIC",
    "Anvil",
    "AnvilError",
    "dev_private_key",
    "find_anvil",
    "rpc",
]
