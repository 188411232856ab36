"""Network faults inside the namespaces: partitions, one-way cuts, isolation, random loss, a bandwidth cap.

What is measured (all between test network hosts only):
- reachability: UDP datagrams (a direction on its own) and TCP connects (need both directions);
- a one-way cut a->b: UDP a->b arrives never, b->a always; TCP fails *both* ways, and the reason is
  visible: b's SYN reaches a (a's listener holds a SYN-RECV entry from b), a's SYN-ACK dies at b;
- loss: the fraction of 1000 paced UDP datagrams that arrive, each direction, against 1 - rate;
- bandwidth: the receiver's byte count of a TCP stream over ~1.2 s after the first 0.4 s (tbf burst).
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from nethelpers import iptables_rules, listen_tcp, reach_matrix, udp_count

from devstack import netns
from devstack.netns import NetnsError, TestNetwork, parse_rate

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def net():
    with TestNetwork(["a", "b", "c", "d"]) as n:
        yield n


@pytest.fixture(autouse=True)
def clean(net):
    net.clear()
    yield
    net.clear()


def _all_pairs(net):
    return [(x, y) for x in net for y in net if x is not y]


def test_partition_drops_both_ways_and_heal_restores(net):
    net.partition(["a", "b"], ["c", "d"])
    got = reach_matrix(_all_pairs(net), "udp")
    cross = {("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")}
    cross |= {(y, x) for x, y in cross}
    assert {pair for pair, ok in got.items() if not ok} == cross
    tcp = reach_matrix([(net["a"], net["c"]), (net["d"], net["b"]), (net["a"], net["b"]), (net["c"], net["d"])],
                       "tcp")
    assert tcp == {("a", "c"): False, ("d", "b"): False, ("a", "b"): True, ("c", "d"): True}
    net.heal()
    assert all(reach_matrix(_all_pairs(net), "udp").values())
    assert all(not iptables_rules(h) for h in net)


def test_one_way_cut(net):
    a, b = net["a"], net["b"]
    net.cut(a, b)  # a cannot send to b
    assert udp_count(a, b, 20) == 0 and udp_count(b, a, 20) == 20
    # TCP from b to a: b's SYN reaches a, a's SYN-ACK is dropped at b, so the connect fails even
    # though b -> a works. The SYN-RECV entry on a's listener is the proof that b's packets arrive.
    server = listen_tcp(a)
    port = server.getsockname()[1]
    failed = {}

    def connect():
        try:
            b.call(socket.create_connection, (a.ip, port), timeout=0.6).close()
            failed["b->a"] = False
        except OSError:
            failed["b->a"] = True

    t = threading.Thread(target=connect)
    t.start()
    time.sleep(0.2)
    half_open = a.run(["ss", "-Htn", "state", "syn-recv", f"( sport = :{port} )"]).stdout
    t.join()
    server.close()
    assert b.ip in half_open and failed["b->a"]
    # And from a to b nothing arrives at all: b's listener never sees a SYN.
    server = listen_tcp(b)
    port = server.getsockname()[1]
    with pytest.raises(OSError):
        a.call(socket.create_connection, (b.ip, port), timeout=0.5)
    assert b.run(["ss", "-Htn", "state", "syn-recv", f"( sport = :{port} )"]).stdout == ""
    server.close()
    assert udp_count(net["c"], b, 10) == 10  # c is not cut
    net.heal()
    assert udp_count(a, b, 10) == 10


def test_isolate_and_clear(net):
    net.isolate("c")
    got = reach_matrix(_all_pairs(net), "udp")
    assert {pair for pair, ok in got.items() if not ok} == {p for p in got if "c" in p}
    net.loss("a", 0.5)
    net.clear("c")  # lifts c's isolation, leaves a's loss
    assert all(reach_matrix([p for p in _all_pairs(net) if "a" not in (p[0].name, p[1].name)], "udp").values())
    assert net.faults() == {"cuts": [], "loss": {"a": 0.5}, "bandwidth": {}}


def test_loss_drops_the_configured_fraction(net):
    a, b, c = net["a"], net["b"], net["c"]
    net.loss(a, 0.3)
    n = 1000
    sent_by_a = udp_count(a, b, n) / n
    sent_to_a = udp_count(b, a, n) / n
    others = udp_count(c, b, 300) / 300
    print(f"loss 0.3: a->b delivered {sent_by_a:.3f}, b->a {sent_to_a:.3f}, c->b {others:.3f}")
    assert abs(sent_by_a - 0.7) < 0.06 and abs(sent_to_a - 0.7) < 0.06  # sd 0.0145 at n=1000
    assert others == 1.0  # loss is a's only
    net.loss(a, 1)
    assert udp_count(b, a, 20) == 0
    net.loss(a, 0)
    assert udp_count(b, a, 50) == 50 and not iptables_rules(a)


def _throughput(src, dst, seconds: float = 1.6, skip: float = 0.4) -> float:
    """bit/s a TCP stream src -> dst achieves, counted at the receiver after the first ``skip`` seconds."""
    server = listen_tcp(dst)
    port = server.getsockname()[1]
    marks: list[tuple[float, int]] = []

    def receive():
        conn, _ = server.accept()
        total = 0
        with conn:
            while True:
                try:
                    chunk = conn.recv(1 << 16)
                except ConnectionResetError:  # the sender aborts: what is still queued does not count
                    return
                if not chunk:
                    return
                total += len(chunk)
                marks.append((time.monotonic(), total))

    rx = threading.Thread(target=receive)
    rx.start()
    sock = src.call(socket.create_connection, (dst.ip, port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST, no drain
    end = time.monotonic() + seconds
    payload = b"\0" * (1 << 16)
    sock.settimeout(0.2)
    while time.monotonic() < end:
        try:
            sock.send(payload)
        except TimeoutError:
            continue
    start = marks[0][0] if marks else time.monotonic()
    sock.close()
    rx.join(10)
    server.close()
    window = [(t, n) for t, n in marks if start + skip <= t <= end]
    (t0, n0), (t1, n1) = window[0], window[-1]
    return (n1 - n0) * 8 / (t1 - t0)


def test_bandwidth_caps_sending_and_receiving(net):
    a, b = net["a"], net["b"]
    free = _throughput(a, b, seconds=0.3, skip=0.05)
    net.bandwidth(a, "2mbit")  # what a sends
    sending = _throughput(a, b)
    net.clear(a)
    net.bandwidth(b, 4_000_000)  # what b receives
    receiving = _throughput(a, b)
    print(f"tbf: unlimited {free / 1e6:.0f} Mbit/s, a capped at 2 Mbit/s sends {sending / 1e6:.2f}, "
          f"b capped at 4 Mbit/s receives {receiving / 1e6:.2f}")
    assert 0.7 * 2e6 < sending < 1.15 * 2e6
    assert 0.7 * 4e6 < receiving < 1.15 * 4e6
    assert free > 20 * 4e6
    net.clear(b)
    assert "tbf" not in b.run(["tc", "qdisc"]).stdout


def test_bad_fault_input_changes_nothing(net):
    other = TestNetwork(["a"])
    bad = [
        lambda: net.loss("a", 1.5), lambda: net.loss("a", -0.1), lambda: net.loss("a", "0.3"),
        lambda: net.loss("a", True), lambda: net.loss("a", float("nan")), lambda: net.loss("nope", 0.1),
        lambda: net.bandwidth("a", "fast"), lambda: net.bandwidth("a", 0), lambda: net.bandwidth("a", "1mbps"),
        lambda: net.bandwidth("a", True), lambda: net.bandwidth("a", -5), lambda: net.bandwidth("a", 1e12),
        lambda: net.partition(["a"], ["a", "b"]), lambda: net.partition([], ["a"]), lambda: net.cut("a", "a"),
        lambda: net.cut("nope", "a"), lambda: net.isolate("A"), lambda: net.partition(["a", "zz"], ["b"]),
        lambda: net.clear("nope"), lambda: net.isolate(other.names[0] + "x"),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()
    assert net.faults() == {"cuts": [], "loss": {}, "bandwidth": {}}
    assert all(not iptables_rules(h) for h in net)
    assert all("tbf" not in h.run(["tc", "qdisc"]).stdout for h in net)


def test_parse_rate():
    assert parse_rate("2mbit") == 2_000_000 and parse_rate("500 kbit") == 500_000 and parse_rate(64_000) == 64_000
    assert parse_rate("1.5Gbit") == 1_500_000_000


def test_a_failing_change_is_all_or_nothing(net, monkeypatch):
    """If iptables or tc fails half way (here: on the third host, on the bridge end), what was in force stays."""
    net.loss("d", 0.1)
    before = {h.name: iptables_rules(h) for h in net}
    real = netns._run
    calls = []

    def flaky(argv, input=None, check=True, timeout=30):
        calls.append(argv)
        if argv[-1].endswith("iptables-restore") and net["c"].ns in argv and len(calls) < 5:
            raise NetnsError("injected: iptables-restore failed")
        if "tbf" in argv and net.bridge_ns in argv:
            raise NetnsError("injected: tc failed")
        return real(argv, input, check, timeout)

    monkeypatch.setattr(netns, "_run", flaky)
    with pytest.raises(NetnsError, match="iptables"):
        net.partition(["a", "b"], ["c", "d"])
    with pytest.raises(NetnsError, match="tc"):
        net.bandwidth("a", "1mbit")
    monkeypatch.undo()
    assert net.faults() == {"cuts": [], "loss": {"d": 0.1}, "bandwidth": {}}
    assert {h.name: iptables_rules(h) for h in net} == before
    assert all("tbf" not in h.run(["tc", "qdisc"]).stdout for h in net)  # the host end was set, then lifted
