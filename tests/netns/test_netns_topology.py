"""Hosts in namespaces reach each other by their addresses, and nothing else reaches them.

No probe here sends a packet toward the machine's real network: "the root namespace cannot reach a
host" is shown by its routing table and links (a packet to a 10.x address from the root would leave
the machine), "an outsider cannot reach a host" from another run's namespace, where the kernel
refuses the connect before any packet exists (no route).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import subprocess
import sys
import threading

import pytest
from nethelpers import listen_tcp, reach_matrix, tcp_reach

from devstack import netns
from devstack.netns import MAX_HOSTS, NetnsError, TestNetwork

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def net():
    with TestNetwork(["a", "b", "c"]) as n:
        yield n


def test_hosts_reach_each_other_by_address(net):
    a, b, c = net["a"], net["b"], net["c"]
    assert len({a.ip, b.ip, c.ip}) == 3 and all(ipaddress.ip_address(h.ip) in net.subnet for h in net)
    pairs = [(x, y) for x in net for y in net if x is not y]
    assert all(reach_matrix(pairs, "tcp").values())
    # A real server in a process started inside b, a real client started inside a.
    server = b.popen([sys.executable, "-m", "http.server", "--bind", b.ip, "8123"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    code = ("import sys, time, urllib.request as u\n"
            "for _ in range(100):\n"
            "    try:\n"
            "        print(u.urlopen(sys.argv[1], timeout=1).status); break\n"
            "    except OSError: time.sleep(0.05)\n")
    out = a.run([sys.executable, "-c", code, f"http://{b.ip}:8123/"]).stdout
    server.terminate()
    server.wait()
    assert out.strip() == "200"


def test_loopback_is_per_host(net):
    """127.0.0.1 in a host is that host's own: not another host's, not the machine's."""
    a, b = net["a"], net["b"]
    in_a = listen_tcp(a, "127.0.0.1")
    on_root = socket.create_server(("127.0.0.1", 0))  # the machine's own loopback
    try:
        a.call(socket.create_connection, ("127.0.0.1", in_a.getsockname()[1]), timeout=1).close()  # a: yes
        for host, port in ((b, in_a.getsockname()[1]), (a, on_root.getsockname()[1])):
            with pytest.raises(ConnectionRefusedError):
                host.call(socket.create_connection, ("127.0.0.1", port), timeout=1)
    finally:
        in_a.close()
        on_root.close()


def test_no_route_out_and_nothing_on_the_root_namespace(net):
    for h in net:
        links = h.run(["ip", "-o", "link"]).stdout.splitlines()
        assert [ln.split(":")[1].strip().split("@")[0] for ln in links] == ["lo", h.iface]
        routes = h.run(["ip", "-4", "route", "show", "table", "all"]).stdout
        assert "default" not in routes and "via" not in routes
        assert h.run(["ip", "-6", "addr", "show", "dev", h.iface]).stdout == ""  # no IPv6 to bypass iptables
        # A route lookup sends nothing: a documentation address (RFC 5737) has no way out.
        lookup = h.run(["ip", "route", "get", "192.0.2.1"], check=False)
        assert lookup.returncode != 0 and "unreachable" in lookup.stderr
    bridge = subprocess.run(["ip", "-n", net.bridge_ns, "-o", "addr"], capture_output=True, text=True).stdout
    assert "inet " in bridge and all(" lo " in ln for ln in bridge.splitlines() if "inet " in ln)  # L2 only
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    root_addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    assert net.run_id not in root_links
    assert not any(ipaddress.ip_interface(w.split()[3]).ip in net.subnet for w in root_addrs.splitlines())
    route = subprocess.run(["ip", "route", "get", net["a"].ip], capture_output=True, text=True).stdout
    assert net.run_id not in route  # the root has no path into the run: a packet would go to its gateway


def test_outsiders_and_other_runs_cannot_reach(net):
    with TestNetwork(["a", "z"]) as other:  # same host names, another run: no collision
        assert other.run_id != net.run_id and other.subnet != net.subnet
        assert set(other.namespaces).isdisjoint(net.namespaces)
        server = listen_tcp(net["a"])
        try:
            with pytest.raises(OSError) as e:
                other["a"].call(socket.create_connection, (net["a"].ip, server.getsockname()[1]), timeout=1)
            assert e.value.errno == errno.ENETUNREACH
        finally:
            server.close()
        assert tcp_reach(other["a"], other["z"])
        with pytest.raises(ValueError, match="not part of this network"):
            net.isolate(other["a"])  # a host of another run, even with the same name


def test_concurrent_starts_get_distinct_runs():
    nets = [TestNetwork(["pg", "trustee-1"]) for _ in range(4)]
    errors = []

    def start(n):
        try:
            n.start()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=start, args=(n,)) for n in nets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        assert len({n.run_id for n in nets}) == 4 and len({str(n.subnet) for n in nets}) == 4
        assert all(tcp_reach(n["pg"], n["trustee-1"]) for n in nets)
    finally:
        for n in nets:
            n.close()


@pytest.mark.parametrize("hosts", [[], ["Pg"], ["pg", "pg"], ["a b"], ["a" * 33], ["-a"], ["9a"], [""],
                                   ["ok", 7], [f"h{i}" for i in range(MAX_HOSTS + 1)], ["a/../b"]])
def test_bad_host_names_create_nothing(hosts, monkeypatch):
    def nothing(*a, **kw):
        raise AssertionError("bad input reached the point of creating something")

    for step in ("_run", "_ip_batch", "cleanup_stale"):  # every way to touch the machine
        monkeypatch.setattr(netns, step, nothing)
    monkeypatch.setattr(TestNetwork, "_allocate", nothing)
    with pytest.raises(ValueError):
        TestNetwork(hosts).start()


def test_host_handles_and_misuse(net):
    a = net["a"]
    assert a.prefix[-3:] == ["netns", "exec", a.ns] and a.ns == f"tvnet-{net.run_id}-a"
    assert len(a.iface) <= 15 and len(a.port) <= 15 and len(net.bridge) <= 15
    assert a.run(["ip", "-4", "-o", "addr", "show", "dev", a.iface]).stdout.split()[3] == f"{a.ip}/24"
    with pytest.raises(ValueError, match="unknown host"):
        net["nope"]
    with pytest.raises(NetnsError, match="started already"):
        net.start()
    fresh = TestNetwork(["x"])
    with pytest.raises(NetnsError, match="not up"):
        fresh.loss("x", 0.1)
