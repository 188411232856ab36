"""The node API's HTTP server (cheroot): bounded threads, a TLS handshake that cannot stall the acceptor,
one request per connection, and the OpenAPI document held to what the server answers (issue 18)."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
import urllib.request
from types import SimpleNamespace

import jsonschema
import pytest

from devstack.tls import self_signed
from node.api import WORKERS, NodeAPI
from node.openapi import OPENAPI

TOKEN = "t" * 32


def _node() -> SimpleNamespace:
    return SimpleNamespace(healthy=True, ready=True, eligible=True, tx_view=lambda tx_id: None,
                           overload=lambda: None, counters=SimpleNamespace(snapshot=lambda: {"casts": 1}),
                           gossip=None, recorder=None, reception_summary=lambda: {},
                           cast_many=lambda ballots: [], wait_recorded=lambda votes, timeout: True)


def _raw(port: int, request: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def api():
    a = NodeAPI(_node(), 0, TOKEN).start()
    yield a
    a.stop()


def test_idle_connections_do_not_take_a_thread_each_and_the_api_still_answers(api):
    """http.server started one thread per connection, without limit; cheroot parks idle sockets."""
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", api.port), timeout=5) for _ in range(300)]
    try:
        time.sleep(0.5)
        assert _raw(api.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")
        assert threading.active_count() <= before + WORKERS
    finally:
        for s in idle:
            s.close()


def test_a_client_that_never_finishes_its_tls_handshake_does_not_stall_the_others(tmp_path):
    cert, key = self_signed(tmp_path, "node-1", "127.0.0.1")
    a = NodeAPI(_node(), 0, TOKEN, tls=(str(cert), str(key))).start()
    silent = [socket.create_connection(("127.0.0.1", a.port), timeout=10) for _ in range(5)]  # no ClientHello
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        t0 = time.monotonic()
        with urllib.request.urlopen(f"{a.url}/healthz", context=ctx, timeout=10) as r:
            assert r.status == 200
        assert time.monotonic() - t0 < 2.5  # not behind 5 silent handshakes of 5 s each (the socket timeout)
    finally:
        for s in silent:
            s.close()
        a.stop()


def test_bytes_beyond_a_request_are_never_served_as_another_request(api):
    """One request per connection: a body the server does not read cannot smuggle a second request."""
    smuggled = b"GET /counters HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
    resp = _raw(api.port, b"GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n" + smuggled)
    assert resp.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in resp, resp
    resp = _raw(api.port, b"GET /nope HTTP/1.1\r\nContent-Length: -1\r\n\r\n" + smuggled)
    assert resp.count(b"HTTP/1.1 ") == 1, resp


@pytest.mark.parametrize("raw, code", [
    (b"GET /healthz\r\n\r\n", 400),  # no version (HTTP/0.9)
    (b"GET /healthz HTTP/2.0\r\n\r\n", 505),
    (b"BREW /votes HTTP/1.1\r\n\r\n", 405),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"POST /votes HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 999999\r\n\r\n", 413),
])
def test_the_servers_own_refusals_answer_json(api, raw, code):
    resp = _raw(api.port, raw)
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", resp)
    assert m and int(m.group(1)) == code, resp[:200]
    assert "error" in json.loads(resp.partition(b"\r\n\r\n")[2])


# --- the OpenAPI document ----------------------------------------------------------------------------------


def test_the_openapi_document_is_served_without_a_token_and_is_well_formed(api):
    with urllib.request.urlopen(f"{api.url}/openapi.json", timeout=5) as r:
        doc = json.loads(r.read())
    assert doc == json.loads(json.dumps(OPENAPI))
    assert doc["openapi"].startswith("3.1")
    for path, ops in doc["paths"].items():
        assert path.startswith("/")
        for method, op in ops.items():
            assert method in ("get", "post") and op["responses"], (path, method)
            for resp in op["responses"].values():  # every schema it names is a JSON Schema (2020-12)
                for media in resp.get("content", {}).values():
                    jsonschema.Draft202012Validator.check_schema(_inline(media["schema"], doc))


def _inline(schema: object, doc: dict) -> object:
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], doc)
        return {k: _inline(v, doc) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, doc) for v in schema]
    return schema


def test_every_answered_path_is_documented_and_every_documented_answer_is_one_it_gives(api):
    """What the server answers (path, method, status) against the document, both ways."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    tried = {
        ("/healthz", "get"): [({}, None)], ("/readyz", "get"): [({}, None)], ("/openapi.json", "get"): [({}, None)],
        ("/counters", "get"): [(auth, None), ({}, None)],
        ("/tx/{tx_id}", "get"): [(auth, None), ({}, None)],
        ("/votes", "post"): [(auth, b"[]"), ({}, b"{}")],
    }
    for (path, method), calls in tried.items():
        assert method in OPENAPI["paths"][path], (path, method)
        documented = OPENAPI["paths"][path][method]["responses"]
        for headers, body in calls:
            url = api.url + path.replace("{tx_id}", "tx_1")
            req = urllib.request.Request(url, data=body, headers=headers, method=method.upper())
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            assert str(status) in documented, (path, method, status)
    assert {p for p, _ in tried} == set(OPENAPI["paths"])
    resp = _raw(api.port, b"GET /undocumented HTTP/1.1\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 404 ")


def test_alive_says_whether_the_server_thread_still_serves():
    """runner.serve exits non-zero (a supervisor restarts the node) once the API is no longer alive."""
    a = NodeAPI(_node(), 0, TOKEN).start()
    assert a.alive
    a.server.stop()  # as a crash of its serve loop would leave it
    deadline = time.monotonic() + 5
    while a.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not a.alive


def test_a_restarted_node_takes_its_api_port_again_after_serving(api):
    """The first listener is on port 0; its answered connections sit in TIME_WAIT when the node restarts."""
    for _ in range(5):
        assert _raw(api.port, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    port = api.port
    api.stop()
    again = NodeAPI(_node(), port, TOKEN).start()
    try:
        assert again.port == port
        assert _raw(port, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    finally:
        again.stop()


def test_clients_that_trickle_their_headers_are_cut_and_do_not_starve_the_api(api, monkeypatch):
    """A header byte every second keeps each read within the socket timeout; the head deadline cuts them."""
    import node.api as api_mod

    count = WORKERS + 10

    def trickle(out: list) -> None:
        s = socket.create_connection(("127.0.0.1", api.port), timeout=30)
        t0 = time.monotonic()
        try:
            for ch in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 40:
                s.send(bytes([ch]))
                time.sleep(1)
        except OSError:
            pass
        out.append(time.monotonic() - t0)
        s.close()

    cut: list[float] = []
    threads = [threading.Thread(target=trickle, args=(cut,), daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    time.sleep(2)
    t0 = time.monotonic()
    assert _raw(api.port, b"GET /healthz HTTP/1.1\r\n\r\n", timeout=30).startswith(b"HTTP/1.1 200 ")
    assert time.monotonic() - t0 < api_mod.HEAD_DEADLINE + 5
    for t in threads:
        t.join(60)
    # every one cut long before its trickle would end (~64 s); the 10 beyond the pool waited one deadline for a worker
    assert len(cut) == count and max(cut) < 2 * api_mod.HEAD_DEADLINE + 5, sorted(cut)[-3:]
