"""The node's API (127.0.0.1 by default; elsewhere only over TLS), for clients and operators, behind a bearer token.

``POST /votes`` {"tx_id", "value"} casts this node's vote and answers 202 once it is in the cluster
log (503 if it is not within 10 s: retrying is idempotent, the same signed vote comes back); asking
for another value than the one this trustee already signed for a transaction answers 409 with the
earlier signed vote and signs nothing (R14); ``{"votes": [{"tx_id", "value"}, ...]}``
casts up to 1,000 at once (all or nothing: one bad entry refuses the whole request, 400); a trustee
that is banned or removed answers 403 at once (its votes would never be recorded);
``GET /tx/<tx_id>`` reads a
transaction's state; ``GET /healthz`` (threads alive) and ``GET /readyz`` (caught up with the
log) are unauthenticated, for supervisors. Anyone else gets 401: the token is read from a
file only the operator can read.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import ssl
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from events.errors import InvalidVote, ThresholdVoteError
from events.vote import check_tx_id, check_u64
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
        if tls is None and not plain_http and not _loopback(host):
            raise NodeStartError(f"the API on {host} (not loopback) needs TLS: give --api-tls-cert and --api-tls-key "
                                 "(or --api-plain-http, if something else encrypts the link)")
        context = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                context.load_cert_chain(*tls)
            except (OSError, ssl.SSLError) as e:
                raise NodeStartError(f"the API's TLS certificate or key cannot be used: {e}") from None
        self.node = node
        self.token = token
        try:
            server = _QuietServer6 if ":" in host else _QuietServer
            self.server = server((host, port), _handler(self))
        except OSError as e:
            raise NodeStartError(f"the API cannot listen on {host}:{port}: {e.strerror or e}") from None
        if context is not None:  # the handshake happens in the request's own thread, not in accept()
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                     do_handshake_on_connect=False)
        self.host, self.tls = host, context is not None
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="api", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> NodeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _QuietServer(ThreadingHTTPServer):
    """A client that resets its connection (before reading a 401, say) is counted, not a traceback in the log:
    200 such connections once wrote 320 KB to the node's log, no token needed."""

    daemon_threads = True
    request_queue_size = 256  # socketserver's default backlog of 5 drops SYNs under a burst (1 s client retries)
    resets = 0

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError | ssl.SSLError):  # a TLS handshake failed
            self.resets += 1
            return
        super().handle_error(request, client_address)


class _QuietServer6(_QuietServer):
    address_family = socket.AF_INET6


def _handler(api: NodeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # a client that announces more body than it sends must not hold a thread forever

        def parse_request(self) -> bool:
            for _ in range(4):  # RFC 9112 2.2: ignore a few empty lines before the request line
                if self.raw_requestline not in (b"\r\n", b"\n"):
                    break
                self.raw_requestline = self.rfile.readline(65537)
            ok = super().parse_request()
            if ok and self.request_version == "HTTP/0.9":
                self.request_version = "HTTP/1.0"  # so that our answer has a status line
                self.send_error(400, "HTTP/0.9 is not supported")
                return False
            return ok

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's own errors (bad request line, 501, 414, 431) answer JSON like ours."""
            self.close_connection = True
            if self.request_version == "HTTP/0.9":  # http.server's default before a version was parsed
                self.request_version = "HTTP/1.0"
            try:
                phrase = HTTPStatus(code).phrase
            except ValueError:
                phrase = "error"
            self._send(code, {"error": message or phrase})

        def log_message(self, *args: object) -> None:
            """Requests are counted, not logged (a client loop must not flood the node's log)."""

        def _send(self, code: int, body: object, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if hmac.compare_digest(given.encode(), api.token.encode()):
                return True
            self._send(401, {"error": "missing or wrong bearer token"})
            return False

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200 if api.node.healthy else 503, {"healthy": api.node.healthy})
            elif self.path == "/readyz":
                ready = api.node.ready
                self._send(200 if ready else 503, {"ready": ready, "eligible": api.node.eligible})
            elif self.path.startswith("/tx/"):
                if not self._authorised():
                    return
                try:
                    tx_id = check_tx_id(self.path[4:])
                except InvalidVote as e:
                    self._send(400, {"error": str(e)})
                    return
                view = api.node.tx_view(tx_id)
                self._send(200 if view else 404, view or {"error": f"no transaction {tx_id}"})
            elif self.path == "/counters":
                if self._authorised():
                    gossip = api.node.gossip.counters.snapshot() if api.node.gossip else {}
                    if api.node.gossip:  # gauges: is our topic mesh formed, and under which IP rules (issue 18)
                        gossip |= {"mesh_peers": len(api.node.gossip.mesh_peers()), "eclipse_protection": int(
                            api.node.gossip.gossip.config.eclipse_protection_effective)}
                    recorder = api.node.recorder.stats if api.node.recorder else {}
                    self._send(200, api.node.counters.snapshot() | {f"gossip_{k}": v for k, v in gossip.items()}
                               | {f"recorder_{k}": v for k, v in recorder.items()} | api.node.reception_summary())
            else:
                self._send(404, {"error": "no such endpoint"})

        def do_POST(self) -> None:
            if self.path != "/votes":
                self._send(404, {"error": "no such endpoint"})
                return
            if not self._authorised():
                return
            retry_after = api.node.overload()
            if retry_after is not None:  # back-pressure: refuse before reading, signing or queueing anything
                self.close_connection = True
                self._send(503, {"error": "the node is behind; try again later (nothing was signed)"},
                           {"Retry-After": str(int(retry_after + 0.999))})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if not 0 < length <= MAX_BATCH_BODY:
                    raise InvalidVote(f"body must be 1..{MAX_BATCH_BODY} bytes")
                try:
                    raw = self.rfile.read(length)
                except (TimeoutError, OSError):
                    self.close_connection = True
                    self._send(408, {"error": f"the body did not arrive within {self.timeout}s"})
                    return
                if len(raw) < length:
                    raise InvalidVote("the body is shorter than its Content-Length")
                if too_deep(raw):  # before json.loads: deep nesting overflows its C recursion
                    raise InvalidVote(f"body nests deeper than {MAX_DEPTH}")
                votes = api.node.cast_many(ballots(json.loads(raw), length))
            except (InvalidVote, ValueError) as e:
                self._send(400, {"error": str(e)})
                return
            except VoteConflict as e:  # R14: nothing signed; the earlier signed vote says what was
                self._send(409, {"error": str(e), "earlier": [sv.to_json() for sv in e.earlier]})
                return
            except NotEligible as e:
                self._send(403, {"error": str(e)})  # final: retrying cannot help
                return
            except (NodeStartError, ThresholdVoteError) as e:
                self._send(503, {"error": str(e)})
                return
            # 202 means durable: the vote is in the cluster log, so a crash after the answer loses nothing.
            if not api.node.wait_recorded(votes, RECORD_WAIT):
                self._send(503, {"error": f"the vote is not in the log after {RECORD_WAIT:g}s "
                                          "(is Postgres or etcd down?); retry: casting again is idempotent (R3)"})
                return
            self._send(202, {"accepted": [sv.to_json() for sv in votes], "recorded": True})

    return Handler


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
