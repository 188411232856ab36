"""Trace spans (seed section 13.2) that cost nothing unless tracing is configured.

``span(VOTE_RECEIVE, tx_id=...)`` is a context manager. Tracing is on when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, or after
:func:`configure` is called; then spans go to an OTLP/HTTP exporter (Jaeger accepts OTLP on
4318) through a batch processor, named by ``OTEL_SERVICE_NAME``. Otherwise ``span`` returns
a shared no-op object and the OpenTelemetry packages are never imported, so a node that
does not trace pays one global lookup per span.

A vote's trace crosses processes (node -> log -> submitter): :func:`inject` gives the current
span's ``traceparent`` to carry along (a gossip envelope, an event's metadata), and
``span(..., carrier=...)`` continues it on the other side.
"""

from __future__ import annotations

import os
import threading
from typing import Any

VOTE_RECEIVE = "vote.receive"  # vote reception via GossipSub
VOTE_VALIDATE = "vote.validate"  # signature + PeerId validation
VOTE_STORE = "vote.store"  # etcd atomic CAS
VOTE_COUNT = "vote.count"  # counter increment
VOTE_AGGREGATE = "vote.aggregate"  # FSM state transition
BYZANTINE_CHECK = "byzantine.check"  # minority / double vote detection
THRESHOLD_CHECK = "threshold.check"  # consensus verification
SUBMISSION_LOCK = "submission.lock"  # distributed lock acquisition
SUBMISSION_SUBMIT = "submission.submit"  # blockchain RPC call
SUBMISSION_PERSIST = "submission.persist"  # PostgreSQL write
SPAN_NAMES = (
    VOTE_RECEIVE, VOTE_VALIDATE, VOTE_STORE, VOTE_COUNT, VOTE_AGGREGATE,
    BYZANTINE_CHECK, THRESHOLD_CHECK, SUBMISSION_LOCK, SUBMISSION_SUBMIT, SUBMISSION_PERSIST,
)
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class _NoopSpan:
    """Stands in for a span and its context manager when tracing is off."""

    __slots__ = ()

    def __enter__(self) -> _NoopSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        return None

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        return None

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        return None

    def is_recording(self) -> bool:
        return False


NOOP = _NoopSpan()
_UNSET = object()
_tracer: Any = _UNSET  # _UNSET: env not checked yet; None: off; else an OpenTelemetry tracer
_provider: Any = None
_lock = threading.Lock()


def span(name: str, carrier: dict[str, str] | None = None, **attrs: Any) -> Any:
    """A context manager for one span named ``name`` (use the constants above), with attributes.

    Attribute values must be str, bool, int, float or sequences of them; None values are left out.
    ``carrier`` (from :func:`inject` in another process, e.g. carried in a gossip envelope) makes
    this span a child of the remote one, so one trace follows a vote across nodes.
    """
    tracer = _tracer if _tracer is not _UNSET else _from_env()
    if tracer is None:
        return NOOP
    context = None
    if carrier:
        from opentelemetry.propagate import extract

        context = extract(carrier)
    return tracer.start_as_current_span(name, context=context,
                                        attributes={k: v for k, v in attrs.items() if v is not None})


def inject() -> dict[str, str]:
    """The current span as W3C trace-context headers (``traceparent``) to send along; {} when off."""
    if _tracer is _UNSET or _tracer is None:
        return {}
    from opentelemetry.propagate import inject as _inject

    carrier: dict[str, str] = {}
    _inject(carrier)
    return carrier


def enabled() -> bool:
    return (_tracer if _tracer is not _UNSET else _from_env()) is not None


def _from_env() -> Any:
    global _tracer
    with _lock:
        if _tracer is _UNSET:
            _tracer = _build(None, None) if any(os.environ.get(v) for v in ENDPOINT_VARS) else None
        return _tracer


def configure(service_name: str | None = None, endpoint: str | None = None, exporter: Any = None) -> bool:
    """Turn tracing on now (idempotent per process); returns whether it is on.

    ``endpoint`` is the full OTLP/HTTP traces URL (``http://jaeger:4318/v1/traces``); without
    it the exporter reads the ``OTEL_EXPORTER_OTLP_*`` variables. ``exporter`` replaces the
    OTLP exporter (tests pass an in-memory one; it is flushed synchronously).
    """
    global _tracer
    with _lock:
        if endpoint is None and exporter is None and not any(os.environ.get(v) for v in ENDPOINT_VARS):
            _tracer = None
            return False
        _tracer = _build(service_name, endpoint, exporter)
        return True


def _build(service_name: str | None, endpoint: str | None, exporter: Any = None) -> Any:
    global _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    attrs = {"service.name": service_name} if service_name else {}
    provider = TracerProvider(resource=Resource.create(attrs))  # OTEL_SERVICE_NAME when not given
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if _provider is not None:
        _provider.shutdown()
    _provider = provider
    return provider.get_tracer("threshold-vote")


def shutdown() -> None:
    """Flush pending spans and turn tracing off (call at process exit; tests reset with it)."""
    global _tracer, _provider
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _provider = None
        _tracer = _UNSET


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the active span, for logs; None when tracing is off."""
    if _tracer is _UNSET or _tracer is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
