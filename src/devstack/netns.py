"""A multi-host test network on one Linux machine: one network namespace per host, one bridge.

Every *host* (``"pg"``, ``"etcd0"``, ``"trustee-1"`` ...) is a network namespace of its own with
loopback up and one veth interface holding its own IPv4 address; the other ends of the veths are
ports of one bridge, which lives in a namespace of its own. Nothing is created in, or routed to,
the machine's own (root) namespace: no address, no route, no default gateway, no NAT. A host can
reach the other hosts of its run, and nothing else (docs/netns.md has the picture)::

    with TestNetwork(["pg", "etcd0", "client"]) as net:
        pg = net["pg"]
        server = pg.popen(["python", "-m", "http.server", "--bind", pg.ip, "8000"])
        net["client"].run(["python", "-c", f"import urllib.request as u; u.urlopen('http://{pg.ip}:8000')"])
        net.partition(["pg"], ["etcd0", "client"])   # iptables DROP both ways, inside the namespaces
        net.heal()

Names and addresses come from a random 6-hex-digit run id (namespaces ``tvnet-<id>`` for the bridge,
``tvnet-<id>-<host>`` for the hosts; interfaces ``tv<id>br``, ``tv<id>p<i>``, ``tv<id>h<i>``; one /24 out
of 10.224.0.0/11 per run), recorded with the owner's pid in ``/run/tvote-netns/<id>.json`` *before*
anything is created. So concurrent runs never collide, and ``cleanup_stale()`` (called by every
``start()``, or ``python -m devstack.netns --cleanup``) removes whatever a killed run left: its
processes, its namespaces (with them their veths, bridge and iptables rules), its state file.

Faults are enforced where a real network would lose the packets, at the receiver: every rule is in
the filter table INPUT chain of the receiving host's namespace (so a sender never gets a local
EPERM, it just hears nothing), and ``tc tbf`` on both ends of the host's veth.

Needs root, ``ip``/``tc`` (Debian ``iproute2``) and ``iptables-restore`` (Debian ``iptables``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import fcntl
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

NS_PREFIX = "tvnet"
NETNS_DIR = Path("/run/netns")  # where `ip netns` keeps its namespace handles
STATE_DIR = Path("/run/tvote-netns")
SUPERNET = ipaddress.IPv4Network("10.224.0.0/11")  # one /24 of it per run: 8192 runs
MAX_HOSTS = 250
HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
RUN_ID = re.compile(r"^[0-9a-f]{6}$")
_NS_NAME = re.compile(rf"^{NS_PREFIX}-([0-9a-f]{{6}})(?:-(.+))?$")
MIN_RATE, MAX_RATE = 8_000, 10_000_000_000  # bit/s accepted by bandwidth()
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)\s*$", re.IGNORECASE)
_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}  # SI, as tc reads them
CLONE_NEWNET = 0x40000000
TERM_GRACE = 2.0  # seconds a process in a namespace gets between SIGTERM and SIGKILL at teardown


class NetnsError(RuntimeError):
    """A command that builds, changes or removes a test network failed."""


# -- small helpers -----------------------------------------------------------------------------------


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin", "/usr/bin") if (p := Path(d) / name).exists()), None)
    if not found:
        raise FileNotFoundError(f"{name} not found: install Debian's {package} (apt-get install {package})")
    return found


def _run(argv: list[str], input: str | None = None, check: bool = True,
         timeout: float = 30) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def _ip_batch(lines: list[str], netns: str | None = None, force: bool = False) -> subprocess.CompletedProcess[str]:
    """Many ``ip`` commands in one process (``ip [-n NS] -batch -``): a network of 12 hosts in ~30 processes."""
    argv = [_tool("ip", "iproute2")]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")  # go on after a failing line (teardown: some may be gone already)
    return _run([*argv, "-batch", "-"], input="\n".join(lines) + "\n", check=not force)


def _pid_start(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot): with the pid, it names a process uniquely."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def _alive(pid: int, start: int | None) -> bool:
    """Is ``pid`` (started at ``start``) still running? A zombie is not: it has exited, only its parent has
    not reaped it yet (a killed ``tvote up`` under a shell that has not waited for it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and (start is None or int(fields[19]) == start)


def _ns_id(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of a network namespace handle: what tells two namespaces apart."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pids_in(ids: set[tuple[int, int]]) -> list[int]:
    """Processes (thread-group leaders) inside one of the namespaces ``ids``; never ourselves, never init."""
    ids = ids - {_ns_id("/proc/1/ns/net"), _ns_id("/proc/self/ns/net")}  # never the machine's own namespace
    found = []
    if not ids:
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), 1):
            continue
        if _ns_id(f"/proc/{entry.name}/ns/net") in ids:
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _kill_all(pids: list[int], grace: float = TERM_GRACE) -> None:
    """SIGTERM, up to ``grace`` seconds, SIGKILL, and wait until they are gone (a namespace lives on in them)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pids = [p for p in pids if not _gone(p)]
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if not _gone(p)]
            if pids:
                time.sleep(0.02)
        if not pids:
            return


def _remove_namespaces(names: list[str], grace: float = TERM_GRACE) -> None:
    """Kill every process inside ``names``, then delete them (their interfaces and rules go with them)."""
    ids = {i for n in names if (i := _ns_id(NETNS_DIR / n)) is not None}
    if ids:
        _kill_all(_pids_in(ids), grace)
    present = [n for n in names if (NETNS_DIR / n).exists()]
    if present:
        _ip_batch([f"netns del {n}" for n in present], force=True)
    left = [n for n in names if (NETNS_DIR / n).exists()]
    if left:
        raise NetnsError(f"could not delete network namespaces {left}")


def _run_namespaces(run_id: str) -> list[str]:
    """The namespaces that exist now for ``run_id`` (bridge and hosts), whatever the state file says."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if (m := _NS_NAME.match(n)) and m.group(1) == run_id)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """The machine-wide lock of test networks: held to allocate a run and to reap stale ones."""
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(STATE_DIR / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_states() -> dict[str, dict[str, Any]]:
    states = {}
    if STATE_DIR.is_dir():
        for f in STATE_DIR.glob("*.json"):
            try:
                states[f.stem] = json.loads(f.read_text())
            except (OSError, ValueError):
                states[f.stem] = {}  # unreadable (cut short by a crash): its owner is unknown, so it is stale
    return states


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    """Move the *calling thread* into the network namespace open at ``fd``."""
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@contextlib.contextmanager
def enter_netns(ns: str) -> Iterator[None]:
    """Move the *calling thread* into the network namespace ``ns`` while the block runs, then back.

    Sockets opened meanwhile belong to ``ns`` for good; threads started meanwhile are born there and
    stay. A harness that wants its whole process on a test network (``tvote up --network netns``)
    enters a host from its main thread before any other thread exists (gRPC's included) and stays.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / ns, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def parse_rate(rate: int | float | str) -> int:
    """Bits per second from a number (bit/s) or ``"<n>bit|kbit|mbit|gbit"`` (SI, as tc reads them)."""
    if isinstance(rate, bool):
        raise ValueError(f"bad rate {rate!r}: give bit/s as a number, or a string like '2mbit'")
    if isinstance(rate, int | float):
        value = float(rate)
    elif isinstance(rate, str) and (m := _RATE.match(rate)):
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise ValueError(f"bad rate {rate!r}: give bit/s as a number, or a string like '500kbit', '2mbit', '1gbit'")
    if not math.isfinite(value) or not MIN_RATE <= value <= MAX_RATE:
        raise ValueError(f"rate {rate!r} out of range: {MIN_RATE} bit/s to {MAX_RATE} bit/s")
    return int(value)


def _check_loss(rate: object) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or not 0 <= rate <= 1:
        raise ValueError(f"bad loss rate {rate!r}: a fraction from 0 (no loss) to 1 (drop everything)")
    return float(rate)


# -- hosts ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Host:
    """One machine of the test network: a network namespace with one address."""

    name: str
    ns: str  # network namespace name (``ip netns``)
    ip: str
    iface: str  # its veth inside ``ns``
    port: str  # the veth's other end, a bridge port in the bridge namespace
    network: TestNetwork = field(repr=False)
    procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    @property
    def prefix(self) -> list[str]:
        """The argv prefix that runs a command inside this host: ``ip netns exec <ns>``.

        ``ip netns exec`` execs the command itself (no fork): the pid a Popen holds is the command's.
        """
        return [_tool("ip", "iproute2"), "netns", "exec", self.ns]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start ``argv`` inside this host (``subprocess.Popen`` keywords); stopped at teardown if still running."""
        self.network._require_up()
        p = subprocess.Popen([*self.prefix, *argv], **kw)
        self.procs.append(p)
        return p

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 60,
            **kw: Any) -> subprocess.CompletedProcess:
        """Run one command inside this host and wait; output captured as text unless told otherwise."""
        self.network._require_up()
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run([*self.prefix, *argv], check=check, timeout=timeout, **kw)

    @contextlib.contextmanager
    def enter(self) -> Iterator[Host]:
        """Move the *calling thread* into this host while the block runs (see ``enter_netns``)."""
        self.network._require_up()
        with enter_netns(self.ns):
            yield self

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = 60, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a fresh thread inside this host; its result or its exception.

        Good for code that opens its sockets in the calling thread (socket, urllib, psycopg, web3 over
        HTTP). Not for clients that connect from threads of their own that already exist (gRPC: use
        ``popen``, or ``enter`` before any gRPC use).
        """
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                with self.enter():
                    box["result"] = fn(*args, **kwargs)
            except BaseException as e:  # handed to the caller
                box["error"] = e

        t = threading.Thread(target=target, name=f"netns-{self.name}", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise TimeoutError(f"{getattr(fn, '__name__', fn)} in {self.name} still running after {timeout}s")
        if "error" in box:
            raise box["error"]
        return box["result"]

    def __str__(self) -> str:
        return f"{self.name}({self.ip})"


HostRef = Host | str
Hosts = HostRef | Iterable[HostRef]


# -- the network ---------------------------------------------------------------------------------------

_LIVE: set[TestNetwork] = set()  # strong: a network nobody holds any more is still taken down at exit
_HANDLED = (signal.SIGTERM, signal.SIGHUP)
_saved_handlers: dict[int, Any] = {}


def _on_signal(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP become SystemExit, so ``with`` blocks and atexit take the networks down."""
    raise SystemExit(128 + signum)


def _install_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _HANDLED:
        if sig not in _saved_handlers and signal.getsignal(sig) == signal.SIG_DFL:
            _saved_handlers[sig] = signal.signal(sig, _on_signal)


def _restore_handlers() -> None:
    if _LIVE or threading.current_thread() is not threading.main_thread():
        return
    for sig, old in list(_saved_handlers.items()):
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, old)
        del _saved_handlers[sig]


@atexit.register
def _close_all_live() -> None:
    for net in list(_LIVE):
        if net._owner_pid == os.getpid():  # a forked child exiting never takes its parent's network down
            with contextlib.suppress(Exception):
                net.close()


class TestNetwork:
    """Hosts in namespaces on one bridge, and network faults between them. A context manager.

    ``hosts``: names, ``[a-z][a-z0-9-]*`` of at most 32 characters, unique, 1 to 250 of them; host i
    gets address i+1 of the run's /24, in the order given. Nothing is created before ``start()``
    (``__enter__``); bad input raises ``ValueError`` there and then.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, hosts: Iterable[str], *, reap_stale: bool = True) -> None:
        names = list(hosts) if not isinstance(hosts, str) else [hosts]
        if not names:
            raise ValueError("a test network needs at least one host")
        if len(names) > MAX_HOSTS:
            raise ValueError(f"{len(names)} hosts: at most {MAX_HOSTS} fit a run's /24")
        for n in names:
            if not isinstance(n, str) or not HOST_NAME.match(n):
                raise ValueError(f"bad host name {n!r}: lowercase letters, digits and '-', starting with a letter, "
                                 "at most 32 characters")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"host names given twice: {dup}")
        self.names = names
        self.reap_stale = reap_stale
        self.run_id: str | None = None
        self.subnet: ipaddress.IPv4Network | None = None
        self.hosts: dict[str, Host] = {}
        self._up = False
        self._cuts: set[tuple[str, str]] = set()  # (sender, receiver): the receiver drops the sender's packets
        self._loss: dict[str, float] = {}
        self._bandwidth: dict[str, int] = {}
        self._applied: dict[str, str] = {}  # host -> the iptables ruleset in force there
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        self.setup_seconds = self.teardown_seconds = 0.0

    # names ---------------------------------------------------------------------------------------------

    @property
    def bridge_ns(self) -> str:
        return f"{NS_PREFIX}-{self.run_id}"

    @property
    def bridge(self) -> str:
        return f"tv{self.run_id}br"

    @property
    def namespaces(self) -> list[str]:
        return [self.bridge_ns, *(h.ns for h in self.hosts.values())]

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"{self.run_id}.json"

    def __getitem__(self, name: str) -> Host:
        return self._host(name)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    def __repr__(self) -> str:
        return f"TestNetwork(run_id={self.run_id}, subnet={self.subnet}, hosts={list(self.names)}, up={self._up})"

    # lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> TestNetwork:
        """Create every namespace, the bridge, the veths and addresses. On any failure: remove it all, raise."""
        if self._up or self.run_id is not None:
            raise NetnsError("this TestNetwork was started already (make a new one)")
        self._owner_pid = os.getpid()
        if os.geteuid() != 0:
            raise PermissionError("a test network needs root (network namespaces, veths, iptables)")
        _tool("ip", "iproute2")
        _tool("tc", "iproute2")
        _tool("iptables-restore", "iptables")
        t0 = time.monotonic()
        if self.reap_stale:
            cleanup_stale()
        self._allocate()  # writes the state file: from here on a crash leaves something cleanup_stale finds
        _LIVE.add(self)
        _install_handlers()
        try:
            _ip_batch([f"netns add {ns}" for ns in self.namespaces])
            br = [f"link add {self.bridge} type bridge", f"link set {self.bridge} addrgenmode none",
                  f"link set {self.bridge} up", "link set lo up"]
            for h in self.hosts.values():
                br += [f"link add {h.port} type veth peer name {h.iface} netns {h.ns}",
                       f"link set {h.port} addrgenmode none", f"link set {h.port} master {self.bridge}",
                       f"link set {h.port} up"]
            _ip_batch(br, netns=self.bridge_ns)
            for h in self.hosts.values():
                _ip_batch(["link set lo up", f"link set {h.iface} addrgenmode none",
                           f"addr add {h.ip}/{self.subnet.prefixlen} dev {h.iface}", f"link set {h.iface} up"],
                          netns=h.ns)
            self._write_state("up")
            self._up = True
        except BaseException:
            self.close()
            raise
        self.setup_seconds = time.monotonic() - t0
        return self

    def _allocate(self) -> None:
        with _locked():
            states = _read_states()
            used_nets = {s.get("subnet") for s in states.values()}
            for _ in range(1000):
                rid = secrets.token_hex(3)
                net = ipaddress.IPv4Network((int(SUPERNET.network_address) + 256 * secrets.randbelow(
                    SUPERNET.num_addresses // 256), 24))
                if rid not in states and not _run_namespaces(rid) and str(net) not in used_nets:
                    break
            else:
                raise NetnsError("no free run id / subnet after 1000 tries")
            self.run_id, self.subnet = rid, net
            base = int(net.network_address)
            for i, name in enumerate(self.names):
                self.hosts[name] = Host(name, f"{NS_PREFIX}-{rid}-{name}", str(ipaddress.IPv4Address(base + 1 + i)),
                                        f"tv{rid}h{i}", f"tv{rid}p{i}", self)
            self._write_state("setup")

    def _write_state(self, phase: str) -> None:
        state = {"run_id": self.run_id, "pid": os.getpid(), "pid_start": _pid_start(os.getpid()),
                 "subnet": str(self.subnet), "phase": phase, "namespaces": self.namespaces,
                 "hosts": {h.name: h.ip for h in self.hosts.values()}, "created": time.time()}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)

    def close(self) -> None:
        """Stop what runs in the hosts, delete every namespace of the run (and so its links and rules).

        Idempotent; SIGTERM/SIGINT/SIGHUP wait until it is done (they are blocked meanwhile).
        """
        if self.run_id is None:
            return
        if os.getpid() != self._owner_pid:
            raise NetnsError("only the process that started a test network closes it (this is a forked child)")
        t0 = time.monotonic()
        main = threading.current_thread() is threading.main_thread()
        blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked) if main else None
        try:
            with self._lock:
                self._up = False
                for h in self.hosts.values():
                    for p in h.procs:
                        if p.poll() is None:
                            with contextlib.suppress(ProcessLookupError):
                                p.terminate()
                deadline = time.monotonic() + TERM_GRACE
                for h in self.hosts.values():
                    for p in h.procs:
                        try:
                            p.wait(max(0.0, deadline - time.monotonic()))
                        except subprocess.TimeoutExpired:
                            p.kill()
                            p.wait()
                    h.procs.clear()
                names = sorted(set(self.namespaces) | set(_run_namespaces(self.run_id)))
                _remove_namespaces(names)
                self.state_file.unlink(missing_ok=True)
                self.state_file.with_suffix(".tmp").unlink(missing_ok=True)
                _LIVE.discard(self)
                self._cuts.clear()
                self._loss.clear()
                self._bandwidth.clear()
                self._applied.clear()
        finally:
            if main:
                _restore_handlers()
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self.teardown_seconds = time.monotonic() - t0

    def __enter__(self) -> TestNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_up(self) -> None:
        if not self._up:
            raise NetnsError("the test network is not up (start() it, or it was closed)")

    # faults --------------------------------------------------------------------------------------------

    def _host(self, ref: HostRef) -> Host:
        if isinstance(ref, Host):
            if self.hosts.get(ref.name) is not ref:
                raise ValueError(f"host {ref} is not part of this network ({self.run_id})")
            return ref
        if isinstance(ref, str) and ref in self.hosts:
            return self.hosts[ref]
        if isinstance(ref, str) and not self.hosts and ref in self.names:
            raise NetnsError("the test network is not up (start() it first)")
        raise ValueError(f"unknown host {ref!r}: this network has {self.names}")

    def _group(self, refs: Hosts) -> list[Host]:
        items = [refs] if isinstance(refs, Host | str) else list(refs)
        hosts = [self._host(r) for r in items]
        if not hosts:
            raise ValueError("an empty group of hosts")
        return hosts

    def partition(self, a: Hosts, b: Hosts) -> None:
        """No packet between a host of ``a`` and a host of ``b``, either way (adds to the cuts in force)."""
        ga, gb = self._group(a), self._group(b)
        both = {h.name for h in ga} & {h.name for h in gb}
        if both:
            raise ValueError(f"hosts on both sides of a partition: {sorted(both)}")
        self._change(cuts={(x.name, y.name) for x in ga for y in gb} | {(y.name, x.name) for x in ga for y in gb})

    def cut(self, a: Hosts, b: Hosts) -> None:
        """One-way: no packet from ``a`` reaches ``b``; ``b`` still reaches ``a``.

        The packets die at ``b``'s INPUT. TCP needs both directions, so a TCP connection fails *both*
        ways (b's SYN reaches a, a's SYN-ACK is dropped at b): UDP shows the asymmetry.
        """
        ga, gb = self._group(a), self._group(b)
        both = {h.name for h in ga} & {h.name for h in gb}
        if both:
            raise ValueError(f"a host cannot be cut from itself: {sorted(both)}")
        self._change(cuts={(x.name, y.name) for x in ga for y in gb})

    def isolate(self, host: HostRef) -> None:
        """Cut ``host`` from every other host, both ways (its loopback still works)."""
        h = self._host(host)
        others = [o for o in self.hosts.values() if o is not h]
        if others:
            self.partition([h], others)

    def heal(self) -> None:
        """Lift every partition, cut and isolation (loss and bandwidth limits stay: see ``clear``)."""
        with self._lock:
            self._require_up()
            self._set_rules(set(), self._loss)

    def loss(self, host: HostRef, rate: float) -> None:
        """Drop each packet ``host`` sends or receives with probability ``rate`` (0 lifts it).

        Its incoming packets are dropped at its INPUT, its outgoing ones at the receiver's INPUT
        (``iptables -m statistic --mode random``), so every packet crosses one drop point; between two
        lossy hosts both apply. Loopback traffic is never dropped.
        """
        h, p = self._host(host), _check_loss(rate)
        with self._lock:
            self._require_up()
            loss = {k: v for k, v in self._loss.items() if k != h.name}
            if p > 0:
                loss[h.name] = p
            self._set_rules(self._cuts, loss)

    def bandwidth(self, host: HostRef, rate: int | float | str | None) -> None:
        """Limit what ``host`` sends and what it receives to ``rate`` each (``tc tbf`` on both veth ends).

        ``rate``: bit/s as a number, or ``"500kbit"``/``"2mbit"``/``"1gbit"``; None lifts the limit.
        """
        h = self._host(host)
        bits = None if rate is None else parse_rate(rate)
        with self._lock:
            self._require_up()
            if bits is None:
                self._tbf_off(h)
            else:
                burst = max(bits // 8 // 50, 4096)  # 20 ms of traffic, and at least a few full frames
                self._bandwidth[h.name] = bits
                try:
                    for ns, dev in ((h.ns, h.iface), (self.bridge_ns, h.port)):
                        _run([_tool("tc", "iproute2"), "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
                              "rate", f"{bits}bit", "burst", str(burst), "latency", "100ms"])
                except BaseException:
                    self._tbf_off(h)  # never half a limit: on failure the host has none
                    raise

    def _tbf_off(self, h: Host) -> None:
        if self._bandwidth.pop(h.name, None) is not None:
            for ns, dev in ((h.ns, h.iface), (self.bridge_ns, h.port)):
                _run([_tool("tc", "iproute2"), "-n", ns, "qdisc", "del", "dev", dev, "root"], check=False)

    def clear(self, host: HostRef | None = None) -> None:
        """Lift every fault that involves ``host`` (its cuts either way, its loss, its limit); no host: all."""
        with self._lock:
            self._require_up()
            targets = [self._host(host)] if host is not None else list(self.hosts.values())
            names = {h.name for h in targets}
            for h in targets:
                self._tbf_off(h)
            self._set_rules({(a, b) for a, b in self._cuts if a not in names and b not in names},
                            {k: v for k, v in self._loss.items() if k not in names})

    def faults(self) -> dict[str, Any]:
        """What is in force: ``cuts`` (sender, receiver) pairs, ``loss`` per host, ``bandwidth`` bit/s per host."""
        with self._lock:
            return {"cuts": sorted(self._cuts), "loss": dict(self._loss), "bandwidth": dict(self._bandwidth)}

    def _change(self, cuts: set[tuple[str, str]]) -> None:
        with self._lock:
            self._require_up()
            self._set_rules(self._cuts | cuts, self._loss)

    def _set_rules(self, cuts: set[tuple[str, str]], loss: dict[str, float]) -> None:
        """Make ``cuts`` and ``loss`` what is in force; if applying fails, put back what was (all or nothing)."""
        old = self._cuts, self._loss
        self._cuts, self._loss = set(cuts), dict(loss)
        try:
            self._apply_rules()
        except BaseException:
            self._cuts, self._loss = old
            with contextlib.suppress(Exception):
                self._apply_rules()
            raise

    def ruleset(self, host: HostRef) -> str:
        """The iptables-restore text this network wants in force in ``host`` now."""
        h = self._host(host)
        tag = f'-m comment --comment "{NS_PREFIX}-{self.run_id}"'
        rules = [f"-A INPUT -s {self.hosts[a].ip}/32 {tag} -j DROP" for a, b in sorted(self._cuts) if b == h.name]
        if h.name in self._loss:
            rules.append(f"-A INPUT ! -i lo {self._statistic(self._loss[h.name])} {tag} -j DROP")
        for sender, p in sorted(self._loss.items()):
            if sender != h.name:
                rules.append(f"-A INPUT -s {self.hosts[sender].ip}/32 {self._statistic(p)} {tag} -j DROP")
        return _ruleset(rules)

    @staticmethod
    def _statistic(p: float) -> str:
        return "" if p >= 1 else f"-m statistic --mode random --probability {p:.9f}"

    def _apply_rules(self) -> None:
        """Replace the filter table of every host whose wanted ruleset changed (one iptables-restore each)."""
        for h in self.hosts.values():
            want = self.ruleset(h)
            if self._applied.get(h.name, _EMPTY_RULESET) != want:
                _run([*h.prefix, _tool("iptables-restore", "iptables")], input=want)
                self._applied[h.name] = want



def _ruleset(rules: list[str]) -> str:
    return "\n".join(["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                      *rules, "COMMIT", ""])


_EMPTY_RULESET = _ruleset([])  # what a new namespace enforces


# -- crashed runs -------------------------------------------------------------------------------------


def cleanup_stale() -> list[str]:
    """Remove what runs whose owner is gone left behind; returns their run ids.

    A run is stale when its state file names a process that no longer exists (pid and start time),
    when its state file is unreadable, or when its namespaces have no state file at all (a state file
    is always written before the first namespace and removed after the last). Its processes are
    killed, its namespaces deleted (its veths, bridge and iptables rules go with them), its state
    file removed. Live runs (another test, another terminal) are never touched. There is one state
    directory per machine on purpose: a run recorded anywhere else would look like an orphan.
    """
    with _locked():
        return _reap_stale()


def _reap_stale() -> list[str]:
    """``cleanup_stale`` with the lock already held."""
    cleaned = []
    states = _read_states()
    try:
        ns_names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        ns_names = []
    rids = {m.group(1) for n in ns_names if (m := _NS_NAME.match(n))} | set(states)
    for rid in sorted(rids):
        if not RUN_ID.match(rid):
            continue
        st = states.get(rid)
        if st and isinstance(st.get("pid"), int) and _alive(st["pid"], st.get("pid_start")):
            continue
        _remove_namespaces(sorted(set(_run_namespaces(rid)) | set((st or {}).get("namespaces", []))))
        for suffix in (".json", ".tmp"):
            (STATE_DIR / f"{rid}{suffix}").unlink(missing_ok=True)
        cleaned.append(rid)
    return cleaned


def live_runs() -> dict[str, dict[str, Any]]:
    """The state of every run recorded on this machine (live or stale), by run id."""
    return _read_states()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack.netns", description="Test networks in namespaces.")
    ap.add_argument("--cleanup", action="store_true", help="remove what crashed runs left behind")
    ap.add_argument("--list", action="store_true", help="list recorded runs")
    args = ap.parse_args(argv)
    if args.cleanup:
        print("removed:", " ".join(cleanup_stale()) or "nothing")
    if args.list or not args.cleanup:
        for rid, st in sorted(live_runs().items()):
            alive = isinstance(st.get("pid"), int) and _alive(st["pid"], st.get("pid_start"))
            print(rid, st.get("subnet"), f"pid {st.get('pid')}", "alive" if alive else "STALE",
                  " ".join(st.get("hosts", {})))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["MAX_HOSTS", "SUPERNET", "Host", "NetnsError", "TestNetwork", "cleanup_stale", "enter_netns", "live_runs",
           "parse_rate"]
