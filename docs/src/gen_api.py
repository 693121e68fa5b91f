"""Generate docs/api.md (and docs/openapi/chatops.json) from what the services publish.

* ChatOps serves an OpenAPI 3.1 document at ``GET /openapi.json``; this script asks a fresh
  app for it (Flask's test client: nothing is started or connected) and renders it.
* The scoring service publishes no OpenAPI document yet. Its section is generated from the
  app's own route table (paths and methods); the one-line descriptions come from
  :data:`SCORING_ROUTES` below, and the script fails when a route has none, so the page
  cannot silently fall behind the code.

Run: ``.venv/bin/python docs/src/gen_api.py [--check]`` (``make docs-api``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
API_MD = DOCS / "api.md"
CHATOPS_JSON = DOCS / "openapi" / "chatops.json"

#: One line per scoring route (ARCHITECTURE.md, "Scoring API").
SCORING_ROUTES: dict[str, str] = {
    "/v1/score": (
        'Score one row `{"host", "timestamp", "metrics": {"cpu": …}}` or a batch `{"instances": […]}`; '
        'answers `{"results": [{"host", "timestamp", "anomaly", "score", "severity", "model_version", '
        '"contributions"}]}`. Bad input: 4xx with `{"error": {"code", "message", "field"}}`.'
    ),
    "/v1/model": "The model being served: version, run id, source, load time, registry-check state.",
    "/healthz": "Liveness: the process answers (no model needed).",
    "/readyz": "Readiness: 200 once a model is loaded, 503 with the reason otherwise.",
    "/metrics": "Prometheus text format: request latency, rows scored, anomalies by severity, model state.",
}


def chatops_openapi() -> dict[str, Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from chatops.app import close_app, create_app

    app = create_app({"TOKENS": ["docs-generator"], "TESTING": True})
    try:
        response = app.test_client().get("/openapi.json")
        if response.status_code != 200:
            raise RuntimeError(f"GET /openapi.json answered {response.status_code}")
        document: dict[str, Any] = response.get_json()
        return document
    finally:
        close_app(app)


def scoring_routes() -> list[tuple[str, list[str]]]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from serving.app import create_app
    from serving.model import ModelProvider, StaticSource

    # A provider that is never started: building the app loads nothing.
    app = create_app(model_provider=ModelProvider(StaticSource(object(), "docs", None)))
    routes = []
    for route in app.routes:
        path = getattr(route, "path", None)
        methods = sorted(m for m in (getattr(route, "methods", None) or []) if m != "HEAD")
        if path:
            routes.append((str(path), methods))
    return routes


def _schema_text(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[`{name}`](#schema-{name.lower()})"
    return f"`{json.dumps(schema, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_operation(path: str, method: str, op: dict[str, Any], default_security: list[Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", op.get("summary", ""), ""]
    security = op.get("security", default_security)
    lines.append("Auth: " + ("bearer token (`Authorization: Bearer …`)" if security else "none") + ".")
    lines.append("")
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | schema | description |", "|---|---|---|---|"]
        for p in params:
            schema = _cell(_schema_text(p.get("schema", {})))
            lines.append(f"| `{p['name']}` | {p['in']} | {schema} | {_cell(p.get('description', ''))} |")
        lines.append("")
    body = op.get("requestBody")
    if body:
        schema = body.get("content", {}).get("application/json", {}).get("schema", {})
        lines += [
            "Request body (`application/json`):",
            "",
            "```json",
            json.dumps(schema, indent=2),
            "```",
            "",
        ]
    responses = op.get("responses", {})
    if responses:
        lines += ["| status | meaning | body |", "|---|---|---|"]
        for code, resp in responses.items():
            schema = resp.get("content", {}).get("application/json", {}).get("schema")
            shown = _cell(_schema_text(schema)) if schema else ""
            lines.append(f"| {code} | {_cell(resp.get('description', ''))} | {shown} |")
        lines.append("")
    return lines


def render(chatops: dict[str, Any], scoring: list[tuple[str, list[str]]]) -> str:
    missing = [path for path, _ in scoring if path not in SCORING_ROUTES]
    stale = sorted(set(SCORING_ROUTES) - {path for path, _ in scoring})
    if missing or stale:
        raise ValueError(f"SCORING_ROUTES is out of date: undocumented {missing}, gone {stale}")
    info = chatops.get("info", {})
    lines = [
        "# API reference",
        "",
        "<!-- Generated by docs/src/gen_api.py (make docs-api) from the running code; do not edit. -->",
        "",
        "Two HTTP APIs: the **ChatOps API** (port 8090), described by the OpenAPI document it serves",
        "at `GET /openapi.json` (a copy: [openapi/chatops.json](openapi/chatops.json)), and the",
        "**scoring service** (port 8080), which publishes no OpenAPI document yet: its section lists",
        'the routes the app really has. Errors of both answer `{"error": {"code", "message",',
        '"field"}}` with a 4xx status for bad input.',
        "",
        f"## ChatOps API — {info.get('title', '')} {info.get('version', '')}",
        "",
        info.get("description", ""),
        "",
    ]
    default_security = chatops.get("security", [])
    for path, item in chatops.get("paths", {}).items():
        for method, op in item.items():
            lines += render_operation(path, method, op, default_security)
    lines += ["### Schemas", ""]
    for name, schema in chatops.get("components", {}).get("schemas", {}).items():
        lines += [f'<a id="schema-{name.lower()}"></a>', f"#### `{name}`", "", "```json"]
        lines += [json.dumps(schema, indent=2, ensure_ascii=False), "```", ""]
    lines += [
        "## Scoring service",
        "",
        "No OpenAPI document is published by the scoring service yet; routes below are read from",
        "`serving.app.create_app()`.",
        "",
        "| method | path | what it does |",
        "|---|---|---|",
    ]
    for path, methods in scoring:
        lines.append(f"| {', '.join(methods)} | `{path}` | {_cell(SCORING_ROUTES[path])} |")
    lines.append("")
    return "\n".join(lines)


def outputs() -> dict[Path, str]:
    chatops = chatops_openapi()
    return {
        API_MD: render(chatops, scoring_routes()),
        CHATOPS_JSON: json.dumps(chatops, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/api.md from the services' OpenAPI documents")
    parser.add_argument("--check", action="store_true", help="fail if the committed files differ")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(DOCS.parent)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale (run make docs-api): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
