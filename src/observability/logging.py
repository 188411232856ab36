"""Structured JSON logs (structlog) that carry tx_id, node_id and peer_id without passing them around.

Call :func:`configure_logging` once per process. Bind the identifiers where they become known
(``with log_context(node_id=..., peer_id=...)`` around a node's life, ``tx_id`` around one
vote) and every log line inside carries them, across function calls and asyncio tasks
(contextvars). When tracing is on, lines also carry trace_id and span_id, so a log line
leads to its trace in Jaeger. Standard-library loggers are routed through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from structlog.contextvars import bound_contextvars, merge_contextvars

from observability import tracing

CONTEXT_KEYS = ("tx_id", "node_id", "peer_id")


def _add_trace_ids(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ids = tracing.current_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


def configure_logging(level: str | int = "INFO", json: bool = True, stream: TextIO | None = None,
                      service: str | None = None) -> None:
    """JSON lines on ``stream`` (stderr by default); ``json=False`` gives the console renderer for humans."""
    lvl = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    shared: list[Any] = [
        merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
    ]
    if service:
        shared.insert(0, _static(service=service))
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    out = stream or sys.stderr
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Library logs (psycopg, web3, libp2p) through the same renderer, with the same context.
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(lvl)


def _static(**fields: Any) -> Any:
    def add(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for k, v in fields.items():
            event_dict.setdefault(k, v)
        return event_dict

    return add


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Bind tx_id / node_id / peer_id (or other fields) for log lines inside the block; None is skipped."""
    with bound_contextvars(**{k: v for k, v in ids.items() if v is not None}):
        yield


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()
