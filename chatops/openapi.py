"""Hand-written OpenAPI 3.1 description of the ChatOps API (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from chatops.intents import INTENTS, LEVELS
from smartcloudops.domain import CANONICAL_METRICS
from smartcloudops.labels import LABEL_KINDS, MAX_AUTHOR_CHARS, MAX_LIST_LIMIT, MAX_NOTE_CHARS

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "examples": ["missing_field", "too_long", "unauthorized"]},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
        }
    },
}

_EVIDENCE = {
    "type": "object",
    "required": ["source", "query", "window_start", "window_end", "values"],
    "properties": {
        "source": {"type": "string",
                   "examples": ["simulator", "prometheus", "event_store", "logs", "mlflow"]},
        "query": {"type": "string", "description": "The query or filter as it was run."},
        "window_start": {"type": ["string", "null"], "format": "date-time"},
        "window_end": {"type": ["string", "null"], "format": "date-time"},
        "values": {"type": "array", "items": {"type": "object"}},
        "error": {"type": "string", "description": "Present when the source was unavailable."},
    },
}


_TIME = {"type": "string", "format": "date-time", "examples": ["2026-01-15T10:00:00Z"]}

_LABEL = {
    "type": "object",
    "required": ["label_id", "host", "start", "end", "kind", "author", "note", "anomaly_id", "created_at"],
    "properties": {
        "label_id": {"type": "string", "examples": ["lbl-1a2b3c4d5e6f"]},
        "host": {"type": "string"},
        "start": _TIME,
        "end": _TIME,
        "kind": {"enum": list(LABEL_KINDS)},
        "author": {"type": "string", "maxLength": MAX_AUTHOR_CHARS,
                   "description": "chatops:tok-<token fingerprint> or chatops:slack-<team>-<user>"},
        "note": {"type": "string", "maxLength": MAX_NOTE_CHARS},
        "anomaly_id": {"type": ["string", "null"]},
        "created_at": _TIME,
    },
}


def _err(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document(max_query_chars: int) -> dict[str, Any]:
    auth_errors = {"401": _err("Missing or wrong bearer token."),
                   "429": _err("Rate limit for this token exceeded (see Retry-After).")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SmartCloudOps AI ChatOps",
            "version": "0.1.0",
            "description": (
                "Ask about the fleet in plain language; every answer carries the evidence it "
                "was built from. Understanding is deterministic; an LLM (LiteLLM) only "
                "rephrases when configured, and only if every number it writes is in the "
                "evidence. Approve/reject happen only on an explicit 'approve act-…' request; "
                "labels only from the deterministic parser or POST /labels, never the LLM."
            ),
        },
        "security": [{"bearer": []}],
        "paths": {
            "/query": {
                "post": {
                    "summary": "Ask a question",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["query"],
                        "properties": {
                            "query": {"type": "string", "minLength": 1, "maxLength": max_query_chars},
                            "session_id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$",
                                           "description": "Reuse for follow-ups ('and on db-1?', 'more')."},
                        },
                    }}}},
                    "responses": {
                        "200": {"description": "Answer", "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/QueryResponse"}}}},
                        "400": _err("Malformed JSON, missing or mistyped field, query too long."),
                        "413": _err("Body larger than the limit."),
                        **auth_errors,
                    },
                }
            },
            "/status": {
                "get": {
                    "summary": "Fleet overview; each part degrades to 'unavailable: reason'",
                    "parameters": [{"name": "host", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "Overview"},
                                  "400": _err("Unknown or invalid parameter."), **auth_errors},
                }
            },
            "/logs": {
                "get": {
                    "summary": "Structured logs, newest first",
                    "parameters": [
                        {"name": "since_minutes", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": 527040}},
                        {"name": "level", "in": "query", "schema": {"enum": list(LEVELS)},
                         "description": "That level and above."},
                        {"name": "contains", "in": "query", "schema": {"type": "string", "maxLength": 200}},
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                    ],
                    "responses": {"200": {"description": "Records"},
                                  "400": _err("Unknown or invalid parameter."), **auth_errors},
                }
            },
            "/labels": {
                "post": {
                    "summary": "Add an operator label (idempotent)",
                    "description": (
                        "A window of one host that was a real incident (`incident`: training "
                        "validates on it) or an alarm that was not (`false_alarm`). Times are ISO "
                        "8601, UTC when no offset is given, stored to the second; start < end, at "
                        "most 7 days long, end not more than 5 minutes in the future. The same "
                        "host/start/end/kind again answers 200 with the label already stored. The "
                        "author is the caller's token fingerprint."
                    ),
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["host", "start", "end", "kind"],
                        "additionalProperties": False,
                        "properties": {
                            "host": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
                            "start": _TIME,
                            "end": _TIME,
                            "kind": {"enum": list(LABEL_KINDS)},
                            "note": {"type": "string", "maxLength": MAX_NOTE_CHARS},
                            "anomaly_id": {"type": "string", "pattern": "^anom-[A-Za-z0-9_]{1,59}$"},
                        },
                    }}}},
                    "responses": {
                        "201": {"description": "Stored", "content": {"application/json": {"schema": {
                            "type": "object", "properties": {
                                "label": {"$ref": "#/components/schemas/Label"},
                                "created": {"const": True}}}}}},
                        "200": {"description": "Already stored (the stored label, created false)"},
                        "400": _err("Malformed JSON, missing/unknown/mistyped field, or an invalid "
                                    "value; `field` names it."),
                        "403": _err("The server runs without authentication (ALLOW_NO_AUTH)."),
                        "413": _err("Body larger than the limit."),
                        "503": _err("The event store is unavailable."),
                        **auth_errors,
                    },
                },
                "get": {
                    "summary": "Operator labels, newest window first",
                    "parameters": [
                        {"name": "host", "in": "query", "schema": {"type": "string"}},
                        {"name": "since", "in": "query", "schema": _TIME,
                         "description": "Only labels whose window ends at or after this time."},
                        {"name": "kind", "in": "query", "schema": {"enum": list(LABEL_KINDS)}},
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT,
                                    "default": 100}},
                    ],
                    "responses": {
                        "200": {"description": "Labels", "content": {"application/json": {"schema": {
                            "type": "object", "properties": {
                                "filters": {"type": "object"}, "count": {"type": "integer"},
                                "labels": {"type": "array",
                                           "items": {"$ref": "#/components/schemas/Label"}}}}}}},
                        "400": _err("Unknown or invalid parameter."),
                        "503": _err("The event store is unavailable."),
                        **auth_errors,
                    },
                },
            },
            "/labels/{label_id}": {
                "delete": {
                    "summary": "Delete an operator label (undo a wrong one)",
                    "parameters": [{"name": "label_id", "in": "path", "required": True,
                                    "schema": {"type": "string", "pattern": "^lbl-[A-Za-z0-9_]{1,60}$"}}],
                    "responses": {
                        "200": {"description": "Deleted: {\"deleted\": label_id}"},
                        "400": _err("Not a label id."),
                        "403": _err("The server runs without authentication (ALLOW_NO_AUTH)."),
                        "404": _err("No such label."),
                        **auth_errors,
                    },
                }
            },
            "/healthz": {"get": {"summary": "Liveness (no auth)", "security": [],
                                 "responses": {"200": {"description": "ok"}}}},
            "/openapi.json": {"get": {"summary": "This document (no auth)", "security": [],
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics of this worker (no auth)", "security": [],
                                 "responses": {"200": {"description": "Prometheus text format 0.0.4"}}}},
            "/slack/command": {"post": {
                "summary": "Slack slash command (Slack request signing, not a bearer token)",
                "security": [],
                "parameters": [
                    {"name": "X-Slack-Request-Timestamp", "in": "header", "required": True,
                     "schema": {"type": "string"}, "description": "Unix seconds; within 5 minutes"},
                    {"name": "X-Slack-Signature", "in": "header", "required": True,
                     "schema": {"type": "string"},
                     "description": "v0=hex(HMAC-SHA256(signing secret, 'v0:{timestamp}:{raw body}'))"},
                ],
                "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "required": ["team_id", "user_id", "text"],
                               "properties": {k: {"type": "string"} for k in (
                                   "team_id", "user_id", "channel_id", "user_name", "command", "text",
                                   "response_url", "trigger_id")}}}}},
                "responses": {
                    "200": {"description": "A Slack message: response_type, text, blocks (mrkdwn, "
                                           "escaped). Too-long questions and rate limits are told "
                                           "here too, as an ephemeral message."},
                    "400": _err("Malformed form body or missing field."),
                    "401": _err("Missing/invalid signature, stale timestamp or replayed request."),
                    "413": _err("Body too large."),
                    "415": _err("Not form-encoded."),
                    "503": _err("No signing secret configured."),
                },
            }},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _ERROR,
                "Evidence": _EVIDENCE,
                "Label": _LABEL,
                "QueryResponse": {
                    "type": "object",
                    "required": ["intent", "params", "answer", "evidence", "session_id", "llm"],
                    "properties": {
                        "intent": {"enum": list(INTENTS)},
                        "params": {"type": "object", "properties": {
                            "metric": {"enum": list(CANONICAL_METRICS)},
                            "host": {"type": "string"},
                            "limit": {"type": "integer"},
                            "since_minutes": {"type": "integer"},
                            "level": {"enum": list(LEVELS)},
                            "contains": {"type": "string"},
                            "action_id": {"type": "string"},
                            "kind": {"enum": list(LABEL_KINDS), "description": "label.add"},
                            "start": {**_TIME, "description": "label.add: window start (UTC)"},
                            "end": {**_TIME, "description": "label.add: window end (UTC)"},
                            "at": {**_TIME, "description": "label.add: the anomaly near this time"},
                            "anomaly_id": {"type": "string", "description": "label.add"},
                        }, "additionalProperties": False},
                        "answer": {"type": "string"},
                        "evidence": {"type": "array", "items": {"$ref": "#/components/schemas/Evidence"}},
                        "session_id": {"type": "string"},
                        "llm": {"type": "object", "properties": {
                            "enabled": {"type": "boolean"}, "used": {"type": "boolean"},
                            "model": {"type": ["string", "null"]}, "reason": {"type": "string"},
                        }},
                    },
                },
            },
        },
    }
