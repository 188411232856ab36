"""The node API described as OpenAPI 3.1, served at ``GET /openapi.json`` (no token: it holds no secret).

Kept beside the handlers rather than generated from them: the handlers are a few plain functions, and
``tests/unit/test_openapi.py`` holds the two together (every documented path and status is one the
server answers, every path it answers is documented, and the document is valid OpenAPI).
"""

from __future__ import annotations

from typing import Any

from events.vote import SIGNATURE_LEN, TX_ID_RE, U64_MAX

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ERROR, description)


_BUSY = {**_error("The node is behind (back-pressure): nothing was signed; retry after the given seconds."),
         "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "threshold-vote trustee node API",
        "version": "1",
        "description": "One trustee's local API: cast this trustee's signed vote, read a transaction, health. "
                       "Every answer, errors included, is a JSON object. Off loopback it is served over TLS only.",
    },
    "components": {
        "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "The token from the node's token file (at least 16 characters)."}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Ballot": {"type": "object", "required": ["tx_id", "value"], "properties": {
                "tx_id": {"type": "string", "pattern": f"^{TX_ID_RE.pattern}$"},
                "value": {"type": "integer", "minimum": 0, "maximum": U64_MAX}}},
            "Batch": {"type": "object", "required": ["votes"], "properties": {
                "votes": {"type": "array", "minItems": 1, "maxItems": 1000,
                          "items": {"$ref": "#/components/schemas/Ballot"},
                          "description": "All or nothing: one bad entry refuses the whole request; "
                                         "each tx_id at most once."}}},
            "SignedVote": {"type": "object", "required": ["tx_id", "value", "node_id", "timestamp_ms", "signature"],
                           "properties": {
                               "tx_id": {"type": "string"}, "value": {"type": "integer"},
                               "node_id": {"type": "string"}, "timestamp_ms": {"type": "integer"},
                               "signature": {"type": "string", "pattern": f"^[0-9a-f]{{{2 * SIGNATURE_LEN}}}$",
                                             "description": "Ed25519 over the canonical vote bytes (R2)."}}},
        },
    },
    "paths": {
        "/votes": {"post": {
            "summary": "Cast this trustee's vote(s); 202 once they are in the cluster log (durable).",
            "description": "Casting again is idempotent (R3): the same signed vote comes back. Asking for another "
                           "value than the one already signed for a transaction answers 409 and signs nothing (R14).",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [{"$ref": "#/components/schemas/Ballot"}, {"$ref": "#/components/schemas/Batch"}]}}}},
            "responses": {
                "202": _json({"type": "object", "required": ["accepted", "recorded"], "properties": {
                    "accepted": {"type": "array", "items": {"$ref": "#/components/schemas/SignedVote"}},
                    "recorded": {"const": True}}}, "Signed and recorded in the cluster log."),
                "400": _error("The body is not a valid ballot or batch; nothing was signed."),
                "401": _error("Missing or wrong bearer token."),
                "403": _error("This trustee is banned or removed: its votes would never be recorded."),
                "408": _error("The body did not arrive in time."),
                "409": _json({"type": "object", "required": ["error", "earlier"], "properties": {
                    "error": {"type": "string"},
                    "earlier": {"type": "array", "items": {"$ref": "#/components/schemas/SignedVote"}}}},
                    "This trustee already signed another value for the transaction (R14); nothing was signed."),
                "413": _error("The body is larger than a batch may be."),
                "503": _BUSY,
            }}},
        "/tx/{tx_id}": {"get": {
            "summary": "A transaction's state as this node knows it.",
            "security": [{"bearer": []}],
            "parameters": [{"name": "tx_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": f"^{TX_ID_RE.pattern}$"}}],
            "responses": {"200": _json({"type": "object"}, "The transaction's status, votes and deadline."),
                          "400": _error("Not a valid transaction id."),
                          "401": _error("Missing or wrong bearer token."),
                          "404": _error("This node knows no such transaction.")}}},
        "/counters": {"get": {
            "summary": "The node's counters (gossip, recorder, edge drops, reception latency).",
            "security": [{"bearer": []}],
            "responses": {"200": _json({"type": "object", "additionalProperties": {"type": "number"}}, "Counters."),
                          "401": _error("Missing or wrong bearer token.")}}},
        "/healthz": {"get": {
            "summary": "Liveness: every node thread is alive (for supervisors; no token).",
            "security": [],
            "responses": {"200": _json({"type": "object", "properties": {"healthy": {"type": "boolean"}}}, "Alive."),
                          "503": _json({"type": "object", "properties": {"healthy": {"type": "boolean"}}},
                                       "A thread died: the process is about to exit.")}}},
        "/readyz": {"get": {
            "summary": "Readiness: caught up with the log, enough member peers to reach t (no token).",
            "security": [],
            "responses": {s: _json({"type": "object", "properties": {"ready": {"type": "boolean"},
                                                                     "eligible": {"type": "boolean"}}}, d)
                          for s, d in (("200", "Ready."), ("503", "Not ready (eligible=false: banned or removed)."))}}},
        "/openapi.json": {"get": {
            "summary": "This document.", "security": [],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")}}},
    },
}
