"""node.p2p.addrs: any text given as an address is parsed or refused with AddressError, never anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p.addrs import AddressError, all_loopback, check_advertised, parse_advertise, parse_hostport, parse_listen

TEXT = st.one_of(st.text(max_size=60), st.builds(lambda a, b: f"/ip4/{a}/tcp/{b}", st.text(max_size=12),
                                                 st.text(max_size=8)))


@given(TEXT)
def test_any_text_is_parsed_or_refused_cleanly(text):
    for parse in (parse_listen, parse_advertise, lambda t: parse_hostport(t, "--api-listen")):
        try:
            parse(text)
        except AddressError as e:
            assert "\n" not in str(e)


def test_what_is_accepted():
    assert parse_listen("/ip4/0.0.0.0/tcp/4001") == "/ip4/0.0.0.0/tcp/4001"
    assert parse_advertise("/dns4/node1/tcp/4001") == "/dns4/node1/tcp/4001"
    assert parse_hostport("[::1]:8081", "x") == ("::1", 8081)
    assert all_loopback(["/ip4/127.0.0.1/tcp/0", "/dns4/localhost/tcp/1"])
    assert not all_loopback(["/ip4/127.0.0.1/tcp/0", "/ip4/10.0.0.1/tcp/1"])
    check_advertised(["/ip4/0.0.0.0/tcp/4001"], ["/ip4/10.0.0.1/tcp/4001"])
    with pytest.raises(AddressError, match="every interface"):
        check_advertised(["/ip4/0.0.0.0/tcp/4001"], [])
    with pytest.raises(AddressError):
        parse_hostport("127.0.0.1:²", "x")
