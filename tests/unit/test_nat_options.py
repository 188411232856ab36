"""Bad NAT-traversal settings (issue 18, item 7): a one-line error at start, nothing started."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from node.p2p.config import GossipConfig
from tvote.cli import app

PEER = "12D3KooWR6T6N1Uh9gqZC2RVF6GmbyhQoH4ZRtE2GJr95QFUHVmt"
RELAY = f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER}"


@pytest.mark.parametrize("relays,reachability,error", [
    (["/ip4/10.0.0.1/tcp/4001"], "auto", "not a peer multiaddr"),  # no peer id: whom would we trust?
    ([f"/p2p/{PEER}"], "auto", "not a peer multiaddr"),  # no transport address: nothing to dial
    ([f"{RELAY}/p2p-circuit/p2p/{PEER}"], "auto", "not a peer multiaddr"),  # a relay reached through a relay
    (["not a multiaddr"], "auto", "not a peer multiaddr"),
    (RELAY, "auto", "not one string"),
    ([RELAY], "sometimes", "auto, public or private"),
    ([], "private", "needs at least one relay"),
])
def test_gossip_config_refuses_bad_nat_settings(relays, reachability, error):
    with pytest.raises(ValueError, match=error):
        GossipConfig(seed=b"s" * 32, relays=relays, reachability=reachability).validate()


def test_gossip_config_accepts_a_relay_and_each_reachability():
    for reach in ("auto", "public", "private"):
        GossipConfig(seed=b"s" * 32, relays=[RELAY], reachability=reach, relay_service=True).validate()


@pytest.mark.parametrize("args,error", [
    (["--relay", "/ip4/1.2.3.4/tcp/1"], "--relay '/ip4/1.2.3.4/tcp/1' is not a peer multiaddr"),
    (["--relay", f"{RELAY}/p2p-circuit/p2p/{PEER}"], "is not a peer multiaddr"),
    (["--reachability", "maybe"], "--reachability 'maybe': give auto, public or private"),
    (["--reachability", "private"], "--reachability private needs a --relay"),
])
def test_node_cli_refuses_bad_nat_options_before_starting_anything(args, error):
    r = CliRunner().invoke(app, ["node", "--node-id", "trustee-1", "--key-file", "/nonexistent",
                                 "--dsn", "postgresql://x@127.0.0.1:1/x", "--etcd", "127.0.0.1:2379",
                                 "--api-token-file", "/nonexistent", *args])
    assert r.exit_code == 1
    assert error in " ".join(r.output.split()), r.output
