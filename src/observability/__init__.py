"""Metrics, traces and logs: how an operator sees the service (seed section 13).

``metrics`` defines every Prometheus metric once and maps log events to them; ``tracing``
holds the seed's span names and a span helper that is free when tracing is off;
``logging`` configures structlog JSON logs carrying tx_id, node_id and peer_id.
"""
