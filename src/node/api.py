"""The node's API (127.0.0.1 by default; elsewhere only over TLS), for clients and operators, behind a bearer token.

``POST /votes`` {"tx_id", "value"} casts this node's vote and answers 202 once it is in the cluster
log (503 if it is not within 10 s: retrying is idempotent, the same signed vote comes back); asking
for another value than the one this trustee already signed for a transaction answers 409 with the
earlier signed vote and signs nothing (R14); ``{"votes": [{"tx_id", "value"}, ...]}``
casts up to 1,000 at once (all or nothing: one bad entry refuses the whole request, 400); a trustee
that is banned or removed answers 403 at once (its votes would never be recorded);
``GET /tx/<tx_id>`` reads a
transaction's state; ``GET /healthz`` (threads alive) and ``GET /readyz`` (caught up with the
log) are unauthenticated, for supervisors; so is ``GET /openapi.json``, this API described
(node/openapi.py). Anyone else gets 401: the token is read from a file only the operator can read.

The server is cheroot (CherryPy's WSGI server), not ``http.server`` (whose documentation says it is
not for production): a bounded pool of worker threads (``http.server`` started one per connection,
without limit), body and header size limits enforced before the application runs. Adapted here (see
docs/decisions.md, "Across hosts"): a new connection waits in a selector until it has bytes instead
of holding a worker; the TLS handshake runs in the worker that reads the request, not in cheroot's
single accept thread; every answer closes its connection; cheroot's own refusals answer JSON.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

import cheroot.server
import cheroot.ssl.builtin
import cheroot.wsgi

from events.errors import InvalidVote, ThresholdVoteError
from events.vote import check_tx_id, check_u64
from node.openapi import OPENAPI
from node.service import NodeStartError, NotEligible, TrusteeNode, VoteConflict
from node.wire import MAX_DEPTH, too_deep

MAX_BODY = 4096
MAX_BATCH_BODY = 128 * 1024  # a batch of MAX_CAST ballots (~60 bytes each)
MAX_CAST = 1000
RECORD_WAIT = 10.0  # seconds a cast waits for its vote to be in the log before answering 503


class NodeAPI:
    """The API on ``host:port``. On loopback plain HTTP is enough (only this machine reaches it); on any
    other address the bearer token would cross the network in the clear, so TLS (``tls``: cert and key
    files) is required unless the operator says ``plain_http`` explicitly (e.g. behind its own TLS proxy)."""

    def __init__(self, node: TrusteeNode, port: int, token: str, host: str = "127.0.0.1",
                 tls: tuple[str, str] | None = None, plain_http: bool = False) -> None:
        if len(token) < 16:
            raise NodeStartError("the API token must be at least 16 characters")
        check_api_listen(host, tls is not None, plain_http)
        context = load_tls(*tls) if tls is not None else None
        self.node = node
        self.token = token
        self.server = _Server((host, port), _application(self))
        if context is not None:
            self.server.ssl_adapter = _HandshakeInWorker(context)
        try:
            self.server.prepare()  # binds and listens now: a busy or foreign address is a start error
        except OSError as e:
            raise NodeStartError(f"the API cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.host, self.tls = host, context is not None
        self.port = self.server.bind_addr[1]
        self._thread = threading.Thread(target=self.server.serve, name="api", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.server.ready

    @property
    def resets(self) -> int:
        return self.server.resets

    def start(self) -> NodeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.stop()


def check_api_listen(host: str, tls: bool, plain_http: bool) -> None:
    """Off loopback the bearer token would cross the network: TLS, or ``plain_http`` said explicitly."""
    if not tls and not plain_http and not _loopback(host):
        raise NodeStartError(f"the API on {host} (not loopback) needs TLS: give --api-tls-cert and --api-tls-key "
                             "(or --api-plain-http, if something else encrypts the link)")


def load_tls(cert: str, key: str) -> ssl.SSLContext:
    """The API's server context from PEM files: a file missing, unreadable, not PEM, or a key that is not the
    certificate's is a one-line NodeStartError (``tvote node`` checks it before anything starts)."""
    if not cert or not key:
        raise NodeStartError("the API's TLS needs both --api-tls-cert and --api-tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as e:  # before OSError: SSLError is one
        what = ("the key does not match the certificate" if "KEY_VALUES_MISMATCH" in str(e)
                else f"not a PEM certificate and key ({e.reason or e})")
        raise NodeStartError(f"the API's TLS certificate or key cannot be used: {what} ({cert}, {key})") from None
    except OSError as e:
        raise NodeStartError(f"the API's TLS certificate or key cannot be read: {e.strerror or e}: "
                             f"{e.filename or cert}") from None
    return context


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


WORKERS = 64  # threads, all started up front (cheroot's pool does not grow by itself; a cast holds one for up to
# RECORD_WAIT while its vote is recorded, a slow client for up to HEAD_DEADLINE)
SOCKET_TIMEOUT = 5  # a client that announces more body than it sends must not hold a thread forever
HEAD_DEADLINE = 10.0  # seconds a request's line and headers may take in all, however slowly they trickle in


def _json(code: int, body: object, headers: dict[str, str] | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
    data = json.dumps(body).encode()
    return (f"{code} {_phrase(code)}",
            [*(headers or {}).items(), ("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            data)


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "error"


class _JsonErrors(cheroot.server.HTTPRequest):
    """cheroot's own answers (malformed request line, unsupported version, too large) in JSON like ours; and
    every answer closes its connection without first reading the rest of the body (cheroot would drain it:
    after a read timed out, or when back-pressure refuses before reading, that read fails or waits for a
    client that is not sending)."""

    def send_headers(self) -> None:
        self.close_connection = True  # one request per connection: see _application
        super().send_headers()

    def parse_request(self) -> None:
        """Read the request line and headers under the server's head deadline (see ``_Server.reap``)."""
        self.server.reading[self.conn] = time.monotonic() + HEAD_DEADLINE
        try:
            super().parse_request()
        finally:
            self.server.reading.pop(self.conn, None)

    def simple_response(self, status: Any, msg: Any = "") -> None:
        status = str(status)
        code = int(status[:3])
        text = msg.decode("latin-1") if isinstance(msg, bytes) else str(msg or "")
        data = json.dumps({"error": text or status[4:] or _phrase(code)}).encode()
        self.close_connection = True
        head = (f"{self.server.protocol} {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(OSError):  # the client left before its answer: nothing to tell it
            self.conn.wfile.write(head.encode("latin-1") + data)


class _Connection(cheroot.server.HTTPConnection):
    RequestHandlerClass = _JsonErrors


class _Server(cheroot.wsgi.Server):
    """A client that resets its connection (before reading a 401, say), a TLS handshake that fails, a read
    that times out: counted, not a traceback in the log (200 such connections once wrote 320 KB to the node's
    log, no token needed). Anything else cheroot reports is logged once, without a traceback."""

    ConnectionClass = _Connection

    def __init__(self, bind: tuple[str, int], app: Callable) -> None:
        super().__init__(bind, app, numthreads=WORKERS, max=WORKERS, request_queue_size=256,
                         timeout=SOCKET_TIMEOUT, shutdown_timeout=1)
        self.max_request_body_size = MAX_BATCH_BODY
        self.max_request_header_size = 16 * 1024
        self.server_name = "tvote-node"
        self.resets = 0
        self.reading: dict[Any, float] = {}  # connections whose request head is being read -> deadline
        self._reaper = threading.Thread(target=self.reap, name="api-reaper", daemon=True)

    def serve(self) -> None:
        self._reaper.start()
        super().serve()

    def reap(self) -> None:
        """Cut a connection whose request head is not in after HEAD_DEADLINE, however slowly it trickles.

        The socket timeout bounds one read, not a request: a client sending a header byte every few
        seconds held a worker forever, and 70 such clients (no token needed) held every worker, /healthz
        included. Shutting the socket down wakes the worker's blocked read, which ends the connection."""
        while self.ready:  # set by prepare(), cleared by stop()
            now = time.monotonic()
            for conn, deadline in list(self.reading.items()):
                if now > deadline:
                    self.reading.pop(conn, None)
                    self.resets += 1
                    with contextlib.suppress(OSError):  # the plain socket's shutdown, under TLS too
                        socket.socket.shutdown(conn.socket, socket.SHUT_RDWR)
            time.sleep(0.5)

    @classmethod
    def prepare_socket(cls, bind_addr: Any, family: Any, type: Any, proto: Any, nodelay: Any,
                       ssl_adapter: Any, reuse_port: bool = False) -> Any:
        """SO_REUSEADDR on every listening socket, the first one on port 0 included.

        cheroot leaves it off for port 0. Linux lets a new listener take a port whose old connections
        are in TIME_WAIT only if those had it too (they inherit it from their listener), so a node
        restarted on the API port it was first given (its clients know it there) failed with "Address
        already in use" for a minute after it had served anything (every answer closes, server side)."""
        sock = super().prepare_socket(bind_addr, family, type, proto, nodelay, ssl_adapter, reuse_port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock

    def process_conn(self, conn: Any) -> None:
        """A new connection waits in the selector for its first bytes instead of taking a worker at once.

        cheroot hands a freshly accepted connection straight to a worker, which then blocks reading it for
        up to the socket timeout: 300 clients that connect and send nothing held every worker for 5 s
        each and starved the rest. Parked first, an idle connection costs a file descriptor until
        cheroot's expiry closes it; a worker is taken only once there is something to read."""
        if not getattr(conn, "tvote_parked", False):
            conn.tvote_parked = True
            self._connections.put(conn)
            return
        super().process_conn(conn)

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        self.resets += 1
        if level >= logging.ERROR and not msg.startswith(("socket.error", "Client ")):
            logging.getLogger(__name__).warning("api server: %s", msg[:200])


class _HandshakeInWorker(cheroot.ssl.builtin.BuiltinSSLAdapter):
    """TLS whose handshake happens on the first read, in the worker thread that serves the request.

    cheroot's builtin adapter completes the handshake inside ``accept()``, on its one acceptor thread: a
    client that connects and sends nothing holds every other client off for the socket timeout. Here
    ``wrap`` only attaches the TLS state; OpenSSL performs the handshake on the first ``SSL_read``,
    which cheroot makes from a worker once the socket is readable. A failed handshake is then an
    ``ssl.SSLError`` in that worker, which the server counts as a reset."""

    def __init__(self, context: ssl.SSLContext) -> None:  # not the base's: it would load the files again
        self.context = context
        self.certificate = self.private_key = self.certificate_chain = None
        self.ciphers = None

    def wrap(self, sock: Any) -> tuple[Any, dict]:
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), {}

    def get_environ(self, sock: Any) -> dict:
        return {"HTTPS": "on"}


def _application(api: NodeAPI) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI application. Every answer closes its connection (``Connection: close``): bytes a request
    sent beyond what the server read (a body under a missing, negative or wrong Content-Length) can never
    be taken as the next request, so no request is smuggled behind another; clients that cast many votes
    send one batch (up to 1,000) instead of many requests on one connection."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        status, headers, data = _route(api, environ)
        start_response(status, [*headers, ("Connection", "close")])
        return [data]

    return app


def _route(api: NodeAPI, env: dict) -> tuple[str, list[tuple[str, str]], bytes]:
    method, path = env["REQUEST_METHOD"], env.get("REQUEST_URI", env.get("PATH_INFO", ""))
    if method == "GET":
        return _get(api, env, path)
    if method == "POST":
        return _post(api, env, path)
    return _json(405, {"error": f"method {method} is not allowed"}, {"Allow": "GET, POST"})


def _authorised(api: NodeAPI, env: dict) -> bool:
    given = env.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), api.token.encode())


UNAUTHORISED = (401, {"error": "missing or wrong bearer token"})


def _get(api: NodeAPI, env: dict, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
    node = api.node
    if path == "/healthz":
        return _json(200 if node.healthy else 503, {"healthy": node.healthy})
    if path == "/readyz":
        ready = node.ready
        return _json(200 if ready else 503, {"ready": ready, "eligible": node.eligible})
    if path == "/openapi.json":
        return _json(200, OPENAPI)
    if path.startswith("/tx/"):
        if not _authorised(api, env):
            return _json(*UNAUTHORISED)
        try:
            tx_id = check_tx_id(path[4:])
        except InvalidVote as e:
            return _json(400, {"error": str(e)})
        view = node.tx_view(tx_id)
        return _json(200 if view else 404, view or {"error": f"no transaction {tx_id}"})
    if path == "/counters":
        if not _authorised(api, env):
            return _json(*UNAUTHORISED)
        gossip = node.gossip.counters.snapshot() if node.gossip else {}
        if node.gossip:  # gauges: is our topic mesh formed, and under which IP rules (issue 18)
            gossip |= {"mesh_peers": len(node.gossip.mesh_peers()),
                       "eclipse_protection": int(node.gossip.gossip.config.eclipse_protection_effective)}
        recorder = node.recorder.stats if node.recorder else {}
        store = getattr(node.recorder.store, "stats", {}) if node.recorder else {}
        recorder = recorder | {f"store_{k}": v for k, v in store.items()}
        return _json(200, node.counters.snapshot() | {f"gossip_{k}": v for k, v in gossip.items()}
                     | {f"recorder_{k}": v for k, v in recorder.items()} | node.reception_summary()
                     | {"api_resets": api.resets})
    return _json(404, {"error": "no such endpoint"})


def _post(api: NodeAPI, env: dict, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
    if path != "/votes":
        return _json(404, {"error": "no such endpoint"})
    if not _authorised(api, env):
        return _json(*UNAUTHORISED)
    retry_after = api.node.overload()
    if retry_after is not None:  # back-pressure: refuse before reading, signing or queueing anything
        return _json(503, {"error": "the node is behind; try again later (nothing was signed)"},
                     {"Retry-After": str(int(retry_after + 0.999))})
    try:
        try:
            length = int(env.get("CONTENT_LENGTH") or "0")
        except ValueError:
            raise InvalidVote("Content-Length must be an integer") from None
        if not 0 < length <= MAX_BATCH_BODY:
            raise InvalidVote(f"body must be 1..{MAX_BATCH_BODY} bytes")
        try:
            raw = env["wsgi.input"].read(length)
        except (TimeoutError, OSError):
            return _json(408, {"error": f"the body did not arrive within {SOCKET_TIMEOUT}s"})
        if len(raw) < length:
            raise InvalidVote("the body is shorter than its Content-Length")
        if too_deep(raw):  # before json.loads: deep nesting overflows its C recursion
            raise InvalidVote(f"body nests deeper than {MAX_DEPTH}")
        votes = api.node.cast_many(ballots(json.loads(raw), length))
    except (InvalidVote, ValueError) as e:
        return _json(400, {"error": str(e)})
    except VoteConflict as e:  # R14: nothing signed; the earlier signed vote says what was
        return _json(409, {"error": str(e), "earlier": [sv.to_json() for sv in e.earlier]})
    except NotEligible as e:
        return _json(403, {"error": str(e)})  # final: retrying cannot help
    except (NodeStartError, ThresholdVoteError) as e:
        return _json(503, {"error": str(e)})
    # 202 means durable: the vote is in the cluster log, so a crash after the answer loses nothing.
    if not api.node.wait_recorded(votes, RECORD_WAIT):
        return _json(503, {"error": f"the vote is not in the log after {RECORD_WAIT:g}s "
                                    "(is Postgres or etcd down?); retry: casting again is idempotent (R3)"})
    return _json(202, {"accepted": [sv.to_json() for sv in votes], "recorded": True})


def ballots(body: object, length: int) -> list[tuple[str, int]]:
    """The (tx_id, value) pairs of a POST /votes body, every one checked before any is cast."""
    if not isinstance(body, dict):
        raise InvalidVote("body must be a JSON object")
    if "votes" not in body:
        if length > MAX_BODY:
            raise InvalidVote(f"a single vote's body must be 1..{MAX_BODY} bytes")
        return [(check_tx_id(body.get("tx_id")), check_u64("value", body.get("value")))]
    entries = body["votes"]
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_CAST:
        raise InvalidVote(f"votes must be a list of 1..{MAX_CAST} objects")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise InvalidVote(f"votes[{i}] must be an object")
        try:
            out.append((check_tx_id(e.get("tx_id")), check_u64("value", e.get("value"))))
        except InvalidVote as err:
            raise InvalidVote(f"votes[{i}]: {err}") from None
    if len({tx for tx, _ in out}) != len(out):
        raise InvalidVote("votes name the same tx_id twice")
    return out
