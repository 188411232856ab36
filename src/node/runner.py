"""Run one trustee process: start the node and its API, serve until SIGTERM or a dead thread, stop.

``tvote node`` parses its options into a :class:`~node.service.NodeConfig` and calls :func:`serve`.
Test harnesses that run a *misbehaving* trustee (``src/chaos/trustee.py``) set :data:`ADAPT`: it
receives the started node and returns what the API should serve. Production leaves it None.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.api import NodeAPI
from node.service import NodeConfig, TrusteeNode
from observability.metrics import register_gossip, serve_from_env

log = logging.getLogger(__name__)

ADAPT: Callable[[TrusteeNode], Any] | None = None  # test harnesses only (src/chaos/trustee.py)


def serve(cfg: NodeConfig, status_file: Path | None, say: Callable[[str], None],
          metrics_at: tuple[str, int] | None = None) -> bool:
    """Serve until SIGTERM or Ctrl-C (True) or until a node thread dies (False). Start errors propagate."""
    adapt = ADAPT
    n = TrusteeNode(cfg).start()
    try:
        tls = (cfg.api_tls_cert, cfg.api_tls_key) if cfg.api_tls_cert or cfg.api_tls_key else None
        api = NodeAPI(adapt(n) if adapt else n, cfg.api_port, cfg.api_token, host=cfg.api_host, tls=tls,
                      plain_http=cfg.api_plain_http).start()
    except BaseException:
        n.stop()
        raise
    try:
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
        register_gossip(cfg.node_id, n.gossip.counters.snapshot)
        # /metrics and /health on --metrics-listen (or TVOTE_METRICS_HOST/PORT)
        metrics = serve_from_env(health=lambda: n.healthy, at=metrics_at)
    except BaseException:
        api.stop()
        n.stop()
        raise
    if status_file:
        status_file.write_text(json.dumps({"node_id": cfg.node_id, "peer_id": n.gossip.peer_id,
                                           "listen_addrs": n.gossip.listen_addrs, "bound_addrs": n.gossip.bound_addrs,
                                           "api_port": api.port, "api_host": api.host, "api_tls": api.tls,
                                           "metrics": f"{metrics.server_address[0]}:{metrics.server_address[1]}"
                                           if metrics else None}))
    say(f"{cfg.node_id} up: peer {n.gossip.peer_id}, api {api.url}")
    try:
        while not stop["now"] and n.healthy and api.alive:
            time.sleep(0.1)
    except KeyboardInterrupt:  # Ctrl-C stops like SIGTERM
        stop["now"] = True
    finally:
        if not stop["now"]:  # never a silent zombie: say why, then exit non-zero for a supervisor to restart us
            why = n.why_unhealthy() if not n.healthy else "the API server stopped"
            log.error("node %s is unhealthy, exiting: %s", cfg.node_id, why)
        api.stop()
        n.stop()
    return stop["now"]
