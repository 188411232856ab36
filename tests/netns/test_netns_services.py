"""Postgres, a 3-member etcd and anvil, each on its own test network host, used from another host.

The clients are processes started inside the "client" host (``host.popen``/``host.run``): psycopg,
the project's etcd client (pyetcd), etcdctl and a JSON-RPC call, by the servers' namespace addresses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import devstack
from devstack.anvil import DEFAULT_CHAIN_ID, Anvil
from devstack.etcd import Etcd
from devstack.netns import TestNetwork
from devstack.postgres import Postgres

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SRC = str(Path(devstack.__file__).resolve().parents[1])

CLIENT = r"""
import json, sys, urllib.request
import psycopg, pyetcd
cfg = json.loads(sys.argv[1])
out = {}
with psycopg.connect(cfg["dsn"], connect_timeout=3) as c:
    out["pg"] = [str(x) for x in c.execute("SELECT inet_server_addr(), inet_client_addr()").fetchone()]
try:
    psycopg.connect(cfg["loopback_dsn"], connect_timeout=2)
    out["pg_on_own_loopback"] = True
except psycopg.OperationalError:
    out["pg_on_own_loopback"] = False
host, port = cfg["etcd"]
c = pyetcd.client(host=host, port=port, timeout=3)
c.put("/netns/probe", "hello")
out["etcd"] = c.get("/netns/probe")[0].decode()
req = urllib.request.Request(cfg["anvil"], data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
                             headers={"Content-Type": "application/json"})
out["chain_id"] = int(json.loads(urllib.request.urlopen(req, timeout=3).read())["result"], 16)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with TestNetwork(["pg", "etcd0", "etcd1", "etcd2", "anvil", "client"]) as net:
        pg = Postgres(host=net["pg"].ip, prefix=net["pg"].prefix, fsync=False)  # its own temp dir: postgres-owned
        members = [net[f"etcd{i}"] for i in range(3)]
        etcd = Etcd(size=3, unsafe_tmpfs=True, hosts=[h.ip for h in members], prefixes=[h.prefix for h in members])
        anvil = Anvil(host=net["anvil"].ip, prefix=net["anvil"].prefix,
                      log_path=tmp_path_factory.mktemp("anvil") / "anvil.log")
        try:
            pg.start()
            etcd.start()
            anvil.start()
            yield net, pg, etcd, anvil
        finally:
            anvil.close()
            for i in range(3):
                etcd.kill_member(i)  # a 3-member SIGTERM takes ~6 s (leader hand-over); the data is thrown away
            etcd.destroy()
            pg.destroy()


def _client(net, argv, **kw):
    return net["client"].run(argv, env={**os.environ, "PYTHONPATH": SRC}, **kw)


def test_servers_reached_from_another_namespace(stack):
    net, pg, etcd, anvil = stack
    pg.create_database("netns")  # the harness itself, through the Unix socket
    cfg = {"dsn": pg.dsn("netns"), "loopback_dsn": f"host=127.0.0.1 port={pg.port} dbname=netns user=postgres",
           "etcd": [etcd.members[1].host, etcd.members[1].client_port], "anvil": anvil.url}
    out = json.loads(_client(net, [sys.executable, "-c", CLIENT, json.dumps(cfg)]).stdout)
    assert out == {"pg": [net["pg"].ip, net["client"].ip], "pg_on_own_loopback": False, "etcd": "hello",
                   "chain_id": DEFAULT_CHAIN_ID}
    assert pg.dsn().startswith(f"host={net['pg'].ip} ") and anvil.url.startswith(f"http://{net['anvil'].ip}:")
    # Each member listens on and advertises its own host's address.
    members = _client(net, ["etcdctl", "--endpoints", ",".join(etcd.endpoints), "-w", "json", "member", "list"])
    urls = sorted(u for m in json.loads(members.stdout)["members"] for u in m["peerURLs"] + m["clientURLs"])
    assert "127.0.0.1" not in " ".join(urls)
    assert {u.split("//")[1].split(":")[0] for u in urls} == {net[f"etcd{i}"].ip for i in range(3)}


def test_faults_on_real_servers(stack):
    net, pg, etcd, _ = stack
    etcdctl = ["etcdctl", "--dial-timeout", "1s", "--command-timeout", "2s"]
    status = json.loads(_client(net, [*etcdctl, "--endpoints", ",".join(etcd.endpoints), "-w", "json",
                                      "endpoint", "status"]).stdout)
    leader = status[0]["Status"]["leader"]
    i, j = [k for k, s in enumerate(status) if s["Status"]["header"]["member_id"] != leader]
    # Isolate a follower: the leader and the other follower keep a quorum and go on at once (isolating the
    # leader works too, but costs a re-election and a client retry). The isolated one serves nothing.
    net.isolate(f"etcd{i}")
    try:
        put = _client(net, [*etcdctl, "--endpoints", etcd.endpoints[j], "put", "/netns/k", "v2"], check=False)
        get = _client(net, [*etcdctl, "--endpoints", etcd.endpoints[i], "get", "/netns/k"], check=False)
        assert put.returncode == 0 and get.returncode != 0
        net.partition(["pg"], ["client"])
        probe = [sys.executable, "-c", "import psycopg, sys; psycopg.connect(sys.argv[1], connect_timeout=1)",
                 pg.dsn() + " sslmode=disable"]
        assert _client(net, probe, check=False).returncode != 0
    finally:
        net.heal()
    assert _client(net, probe, check=False).returncode == 0
    deadline = time.monotonic() + 10
    while True:  # the isolated member is back and catches up with the write it missed
        got = _client(net, [*etcdctl, "--endpoints", etcd.endpoints[i], "get", "--print-value-only", "/netns/k"],
                      check=False)
        if got.stdout.strip() == "v2" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got.stdout.strip() == "v2"


HARNESS = r"""
import json, sys
from devstack.netns import enter_netns
cfg = json.loads(sys.argv[1])
with enter_netns(cfg["ns"]):  # main thread, before any other thread: the whole process is on the network
    import psycopg, pyetcd
    with psycopg.connect(cfg["dsn"], connect_timeout=3) as c:
        client_addr = str(c.execute("SELECT inet_client_addr()").fetchone()[0])
    e = pyetcd.client(host=cfg["etcd"][0], port=cfg["etcd"][1], timeout=3)  # gRPC, its threads born inside
    e.put("/netns/harness", "ok")
    print(json.dumps({"client_addr": client_addr, "etcd": e.get("/netns/harness")[0].decode()}))
"""


def test_a_harness_process_entering_a_host(stack):
    """What ``tvote up --network netns`` would do: its own process enters a host, then talks as usual."""
    net, pg, etcd, anvil = stack
    cfg = {"ns": net["client"].ns, "dsn": pg.dsn(), "etcd": [etcd.members[2].host, etcd.members[2].client_port]}
    out = subprocess.run([sys.executable, "-c", HARNESS, json.dumps(cfg)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC}, timeout=30, check=True).stdout
    assert json.loads(out) == {"client_addr": net["client"].ip, "etcd": "ok"}
    # Code that connects from the calling thread also works through Host.call, from this very process.
    code = net["client"].call(lambda: urllib.request.urlopen(urllib.request.Request(
        anvil.url, data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
        headers={"Content-Type": "application/json"}), timeout=3).status)
    assert code == 200


def test_default_launchers_unchanged():
    assert Postgres(port=5999).dsn() == "host=127.0.0.1 port=5999 dbname=postgres user=postgres"
    e = Etcd(size=3)
    try:
        assert all(m.host == "127.0.0.1" and m.prefix == [] for m in e.members)
        assert all(u.startswith("http://127.0.0.1:") for u in e.endpoints)
    finally:
        e.destroy()
    with pytest.raises(ValueError, match="loopback"):
        Anvil(host="10.224.0.1")  # a non-loopback address only with a namespace prefix
    with pytest.raises(ValueError, match="members"):
        Etcd(size=3, hosts=["10.224.0.1"])
