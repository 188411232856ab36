"""A host behind a NAT on the namespace test network: a home router with masquerade and no inbound port.

``behind_nat(net, "trustee-4", router="nat-4")`` adds a namespace ``tvnet-<run>-trustee-4`` that is
*not* on the run's bridge. It is linked by a veth pair of its own to the router host ``nat-4`` (an
ordinary bridge host of the run, so it has the run's address) and holds a private address,
``192.168.<k>.2/24``, that exists only between the two; its default route is the router. The router
forwards and masquerades what the host sends out (``iptables -t nat ... MASQUERADE``), so the host
can dial every host of the run and its connections appear to come from the router's address; and it
drops every *new* connection arriving from the bridge (``-t mangle PREROUTING ... --ctstate NEW
-j DROP``: no port forwarding, nothing listens on the router itself), so no host of the run can dial
the one behind it. That is the case NAT traversal (issue 18, item 7) has to handle: the host can
only be reached over connections it opened itself, e.g. a reservation on a relay.

The rules sit in the router's ``nat`` and ``mangle`` tables, which the network's faults (the
``filter`` table, replaced wholesale by ``iptables-restore``) never touch. The namespace carries the
run's name prefix, so ``TestNetwork.close`` and ``cleanup_stale`` remove it (and with it the veth)
like any other host of the run.
"""

from __future__ import annotations

from devstack.netns import NS_PREFIX, Host, TestNetwork, _ip_batch, _run, _tool

PRIVATE_NET = "192.168.{k}.0/24"  # host .2, router .1; namespace-local, so runs never collide


def behind_nat(net: TestNetwork, name: str, router: str) -> Host:
    """Create host ``name`` behind the NAT router ``router`` (a started host of ``net``); return it.

    The host is added to ``net`` (``net[name]``, ``popen``, teardown) with its private address as
    ``ip``. Faults of the network (``partition``, ``loss``...) are not meant for it: address the
    router instead, which is what the rest of the network sees.
    """
    net._require_up()
    if name in net.hosts:
        raise ValueError(f"host {name!r} exists already")
    r = net[router]
    k = sum(1 for h in net.hosts.values() if h.port.startswith(f"tv{net.run_id}r")) + 1
    if k > 250:
        raise ValueError("at most 250 NAT hosts per run")
    ns = f"{NS_PREFIX}-{net.run_id}-{name}"
    wan, lan, inner = r.iface, f"tv{net.run_id}r{k}", f"tv{net.run_id}n{k}"
    host_ip, gw = f"192.168.{k}.2", f"192.168.{k}.1"
    host = Host(name, ns, host_ip, inner, lan, net)
    net.hosts[name] = host  # before creating anything: close() then removes it whatever happens
    _ip_batch([f"netns add {ns}"])
    _ip_batch([f"link add {lan} type veth peer name {inner} netns {ns}", f"link set {lan} addrgenmode none",
               f"addr add {gw}/24 dev {lan}", f"link set {lan} up"], netns=r.ns)
    _ip_batch(["link set lo up", f"link set {inner} addrgenmode none", f"addr add {host_ip}/24 dev {inner}",
               f"link set {inner} up", f"route add default via {gw}"], netns=ns)
    ipt = _tool("iptables", "iptables")
    _run([*r.prefix, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    _run([*r.prefix, ipt, "-t", "nat", "-A", "POSTROUTING", "-s", PRIVATE_NET.format(k=k), "-o", wan,
          "-j", "MASQUERADE"])
    no_inbound = ["PREROUTING", "-i", wan, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
    if _run([*r.prefix, ipt, "-t", "mangle", "-C", *no_inbound], check=False).returncode != 0:
        _run([*r.prefix, ipt, "-t", "mangle", "-A", *no_inbound])
    net._write_state("up")
    return host
