"""The API off loopback (issue 18): TLS or an explicit opt-out, never the bearer token in the clear by default."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import urllib.request
from types import SimpleNamespace

import pytest

from devstack.tls import self_signed
from node.api import NodeAPI
from node.service import NodeStartError

TOKEN = "t" * 32
NODE = SimpleNamespace(healthy=True, ready=True)  # /healthz reads only these


def test_off_loopback_without_tls_is_refused_before_anything_listens():
    with pytest.raises(NodeStartError, match="needs TLS"):
        NodeAPI(NODE, 0, TOKEN, host="192.0.2.10")


def test_an_address_this_host_does_not_have_is_a_clear_start_error():
    with pytest.raises(NodeStartError, match=r"cannot listen on 192\.0\.2\.10"):
        NodeAPI(NODE, 0, TOKEN, host="192.0.2.10", plain_http=True)


def test_a_bad_certificate_is_a_clear_start_error(tmp_path):
    (tmp_path / "c.pem").write_text("not a certificate")
    with pytest.raises(NodeStartError, match="TLS certificate or key"):
        NodeAPI(NODE, 0, TOKEN, tls=(str(tmp_path / "c.pem"), str(tmp_path / "c.pem")))


def test_tls_serves_a_client_that_trusts_the_certificate_and_survives_one_that_speaks_http(tmp_path):
    cert, key = self_signed(tmp_path, "node-1", "127.0.0.1")
    assert key.stat().st_mode & 0o077 == 0
    api = NodeAPI(NODE, 0, TOKEN, tls=(str(cert), str(key))).start()
    try:
        assert api.url.startswith("https://127.0.0.1:")
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:  # plain HTTP to a TLS port
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            with contextlib.suppress(ConnectionError, TimeoutError):
                s.recv(100)
        ctx = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"{api.url}/healthz", context=ctx, timeout=5) as r:
            assert (r.status, json.loads(r.read())) == (200, {"healthy": True})
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # a client that trusts nothing
            urllib.request.urlopen(f"{api.url}/healthz", context=ssl.create_default_context(), timeout=5)
    finally:
        api.stop()
