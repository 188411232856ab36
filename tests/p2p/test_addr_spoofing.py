"""A peer that advertises an address it does not own cannot divert traffic from the real one (issue 18).

Where a host learns addresses: its bootstrap list (operator-given, with the peer id), identify and the DHT's
sender records (each a *signed* peer record: a peer can only sign addresses for its own id), and the
peers listed in a DHT FIND_NODE answer, whose addresses py-libp2p 0.8.1 stores *unsigned* when the answer
carries no record for them (kad_dht/peer_routing.py: ``add_addrs(new_peer_id, addrs, 3600)``). So a hostile
member can plant "A is at M's address" in B's peerstore, and M can sign a record naming A's address as its
own. Neither diverts anything: every dial ends in a Noise handshake that proves the remote holds the
private key of the peer id dialled, so a dial to A that lands on M (or on anyone) fails, and the real
address, kept beside the planted one, still connects. What a planted address can cost is a failed dial
attempt (docs/decisions.md, "Across hosts"). These tests plant both lies with real hosts and check it.
"""

from __future__ import annotations

import os
import time

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from node.p2p import GossipConfig, ThreadedGossipHost

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _host(**kw: object) -> ThreadedGossipHost:
    return ThreadedGossipHost(GossipConfig(seed=os.urandom(32), dht_discovery=False, **kw)).start()


def _plain(addr: str) -> str:
    return addr.rsplit("/p2p/", 1)[0]


def test_an_address_planted_for_a_member_does_not_divert_dials_to_it():
    a, m, b = _host(), _host(), _host()  # a: the member, m: the hostile peer, b: dials a
    try:
        real, hostile = _plain(a.listen_addrs[0]), _plain(m.listen_addrs[0])
        # what a hostile FIND_NODE answer leaves in b's peerstore: "a is at m's address" (unsigned, 1 h)
        b._call(lambda: b.gossip.host.get_peerstore().add_addrs(ID.from_base58(a.peer_id),
                                                                 [multiaddr.Multiaddr(hostile)], 3600))
        assert not b.connect(f"{hostile}/p2p/{a.peer_id}")  # m cannot answer as a: the handshake fails
        assert "handshake failed" in b.gossip.dial_errors[a.peer_id]
        assert a.peer_id not in b.connected_peers() and m.peer_id not in b.connected_peers()
        # the planted address stays beside the real one, and the real one connects: to a itself
        b._call(lambda: b.gossip.host.get_network().unblock_peer(ID.from_base58(a.peer_id)))  # the 60 s backoff
        assert b.connect(f"{real}/p2p/{a.peer_id}")
        conn = b._call(lambda: b.gossip.host.get_network().get_connections(ID.from_base58(a.peer_id)))
        assert conn and all(c.muxed_conn.peer_id == ID.from_base58(a.peer_id) for c in conn)
        assert b.connected_peers() == [a.peer_id]
    finally:
        for h in (b, m, a):
            h.close()


def test_a_peer_advertising_a_members_address_gets_no_session_in_its_name():
    a = _host()
    m = None
    try:
        real = _plain(a.listen_addrs[0])
        # m signs a record naming a's address as its own (allowed: it is m's signature, about m)
        m = ThreadedGossipHost(GossipConfig(seed=os.urandom(32), dht_discovery=False, advertise=[real])).start()
        assert [_plain(x) for x in m.listen_addrs] == [real]
        b = _host()
        try:
            # b dials m where m says it is: it reaches a, which is not m; nothing is established as m
            assert not b.connect(m.listen_addrs[0])
            assert "handshake failed" in b.gossip.dial_errors[m.peer_id]
            assert m.peer_id not in b.connected_peers()
            # and a is not hurt by it: b still reaches a at that address
            assert b.connect(f"{real}/p2p/{a.peer_id}")
            deadline = time.monotonic() + 5
            while b.peer_id not in a.connected_peers() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert b.peer_id in a.connected_peers()
        finally:
            b.close()
    finally:
        for h in (m, a):
            if h is not None:
                h.close()


def test_a_member_known_by_its_signed_record_is_dialled_there_not_where_a_dht_answer_put_it():
    """The discovery loop's dial (addresses from the peerstore, not given by anyone): the planted address stored
    first, as when a hostile answer came before the peer's own record, is dropped for the signed ones."""
    a, m, b = _host(), _host(), _host()
    try:
        aid = ID.from_base58(a.peer_id)
        assert b.connect(a.listen_addrs[0])  # identify leaves a's signed peer record in b's peerstore...
        store = b.gossip.host.get_peerstore()
        deadline = time.monotonic() + 15  # ...once it has run: after the connection, not before connect returns
        while b._call(lambda: store.get_peer_record(aid)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b._call(lambda: store.get_peer_record(aid)) is not None
        trio.from_thread.run(b.gossip._disconnect, aid, trio_token=b._token)
        deadline = time.monotonic() + 5
        while a.peer_id in b.connected_peers() and time.monotonic() < deadline:
            time.sleep(0.05)
        hostile = multiaddr.Multiaddr(_plain(m.listen_addrs[0]))
        b._call(lambda: store.peer_data_map[aid].addrs.insert(0, hostile))  # first: the one py-libp2p would dial
        stored = b._call(lambda: list(store.addrs(aid)))
        assert stored[0] == hostile
        assert trio.from_thread.run(b.gossip._dial, PeerInfo(aid, stored), trio_token=b._token)
        assert a.peer_id in b.connected_peers() and m.peer_id not in b.connected_peers()
        assert hostile not in b._call(lambda: list(store.addrs(aid)))  # and it is gone from the peerstore
    finally:
        for h in (b, m, a):
            h.close()
