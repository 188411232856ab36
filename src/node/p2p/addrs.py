"""The addresses a process listens on and the ones it tells others to dial, parsed once, at the edge.

A trustee listens on one or more ``--listen`` multiaddrs (``/ip4/0.0.0.0/tcp/4001``) and announces
``--advertise`` multiaddrs (``/ip4/203.0.113.7/tcp/4001``, ``/dns4/node1.example/tcp/4001``): the ones
put in its signed peer record, sent in identify and returned by the DHT. They differ behind a NAT,
in a container, or when listening on every interface. HTTP endpoints (the API, metrics/health) take
``HOST:PORT``. Everything here is pure parsing plus one bind probe: no libp2p host is involved, so a
bad address is refused before anything starts (issue 18, "Bad input").
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable

import multiaddr

LOOPBACK_LISTEN = "/ip4/127.0.0.1/tcp/0"
_HOST_PROTOS = ("ip4", "ip6", "dns", "dns4", "dns6")


class AddressError(ValueError):
    """An address that does not parse or cannot be used where it was given; the message names it."""


def _components(addr: str, what: str) -> list[tuple[str, str]]:
    try:
        m = multiaddr.Multiaddr(addr)
        return [(p.name, m.value_for_protocol(p.code) or "") for p in m.protocols()]
    except Exception as e:  # the multiaddr package raises several unrelated types for bad input
        raise AddressError(f"{what} {addr[:120]!r} is not a multiaddr ({type(e).__name__})") from None


def parse_listen(addr: str) -> str:
    """``/ip4|ip6/<IP>/tcp/<PORT>`` (port 0: any). A wildcard IP is allowed (see ``check_advertised``)."""
    parts = _components(addr, "--listen")
    if len(parts) != 2 or parts[0][0] not in ("ip4", "ip6") or parts[1][0] != "tcp":
        raise AddressError(f"--listen {addr[:120]!r}: give /ip4/IP/tcp/PORT or /ip6/IP/tcp/PORT")
    return str(multiaddr.Multiaddr(addr))


def parse_advertise(addr: str) -> str:
    """``/ip4|ip6|dns|dns4|dns6/<HOST>/tcp/<PORT>``: dialable, so never a wildcard nor port 0, no /p2p
    (the host appends its own peer id; a foreign one would be a lie)."""
    parts = _components(addr, "--advertise")
    if len(parts) != 2 or parts[0][0] not in _HOST_PROTOS or parts[1][0] != "tcp":
        raise AddressError(f"--advertise {addr[:120]!r}: give /ip4/IP/tcp/PORT, /ip6/IP/tcp/PORT or "
                           "/dns4/NAME/tcp/PORT (no /p2p: the node adds its own peer id)")
    host, port = parts[0][1], int(parts[1][1])
    if parts[0][0] in ("ip4", "ip6") and ipaddress.ip_address(host).is_unspecified:
        raise AddressError(f"--advertise {addr[:120]!r}: a wildcard cannot be dialled; give this host's address")
    if port == 0:
        raise AddressError(f"--advertise {addr[:120]!r}: port 0 cannot be dialled; give the port peers reach")
    return str(multiaddr.Multiaddr(addr))


def ip_of(addr: str) -> str | None:
    """The IP of an ``/ip4|ip6`` multiaddr (None for DNS names)."""
    name, value = _components(addr, "address")[0]
    return value if name in ("ip4", "ip6") else None


def port_of(addr: str) -> int:
    return int(dict(_components(addr, "address"))["tcp"])


def is_wildcard(addr: str) -> bool:
    ip = ip_of(addr)
    return ip is not None and ipaddress.ip_address(ip).is_unspecified


def all_loopback(addrs: Iterable[str]) -> bool:
    """True when every address is a loopback IP (or ``localhost``): GossipSub's IP rules stay off then."""
    for a in addrs:
        name, value = _components(a, "address")[0]
        if name in ("ip4", "ip6"):
            if not ipaddress.ip_address(value).is_loopback:
                return False
        elif value != "localhost":
            return False
    return True


def check_advertised(listen: list[str], advertise: list[str]) -> None:
    """A wildcard or port-0 listen address says nothing peers can dial: then ``--advertise`` is required.

    Decided (docs/decisions.md, "Across hosts"): refused, not guessed. Enumerating interfaces picks
    the wrong one on a multi-homed host, a container or behind a NAT, and the peer record is signed:
    what it names is what every member will dial.
    """
    if advertise:
        return
    for a in listen:
        if is_wildcard(a):
            raise AddressError(f"--listen {a} listens on every interface: say which address peers dial "
                               "with --advertise /ip4/IP/tcp/PORT")


def parse_hostport(value: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``; HOST an IP address (port 0: any)."""
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise AddressError(f"{flag} {value[:80]!r}: give HOST:PORT (e.g. 127.0.0.1:8081)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(f"{flag} {value[:80]!r}: HOST must be an IP address") from None
    return host, int(port)


def check_free(host: str, port: int, flag: str) -> None:
    """Bind and release ``host:port`` now: an address in use or not on this host is a one-line error before
    anything starts, instead of a process that half-started (joined the mesh, took its claim) and then died.
    Port 0 (any) always binds. A race with another process remains; the real bind reports it too."""
    if port == 0 and ipaddress.ip_address(host).is_unspecified:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the real listeners: TIME_WAIT is no conflict
        s.bind((host, port))
    except OSError as e:
        raise AddressError(f"{flag} {host}:{port}: cannot listen there ({e.strerror or e})") from None
    finally:
        with contextlib.suppress(OSError):
            s.close()
