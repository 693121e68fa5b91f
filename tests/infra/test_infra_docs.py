"""docs/: the diagram renders from its source, the API reference is current, and what the
pages name (links, make targets, settings, CLI commands) exists in the code."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import require_binary
from infra_helpers import REPO

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
OWN_PAGES = [p for p in PAGES if p.name != "benchmarks.md"]  # benchmarks.md is written by bench/


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_architecture_png_is_rendered_from_its_source(tmp_path: Path) -> None:
    dot = require_binary("dot", "apt-get install graphviz")
    out = tmp_path / "architecture.png"
    proc = subprocess.run(
        [dot, "-Tpng", "-Gdpi=110", str(DOCS / "src" / "architecture.dot"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    committed = _png_size((DOCS / "architecture.png").read_bytes())
    assert _png_size(out.read_bytes()) == committed, "docs/architecture.png is stale: make docs-diagram"
    assert committed[0] > 800 and committed[1] > 400


def test_api_reference_is_generated_from_the_current_code() -> None:
    sys.path.insert(0, str(DOCS / "src"))
    from gen_api import outputs

    for path, text in outputs().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is stale: make docs-api"
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    for route in (
        "POST /query",
        "GET /status",
        "GET /logs",
        "GET /healthz",
        "/v1/score",
        "/readyz",
        "/metrics",
    ):
        assert route in api


@pytest.mark.parametrize("page", OWN_PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_make_targets_named_in_the_docs_exist() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z0-9-]*)(?:\s+[a-z][a-z0-9-%]*)*\s*:(?!=)", makefile, re.M))
    targets |= {t for line in re.findall(r"^([a-z][a-z0-9 -]*):", makefile, re.M) for t in line.split()}
    for page in OWN_PAGES:
        for target in re.findall(r"`make ([a-z][a-z0-9-]*)`", page.read_text(encoding="utf-8")):
            assert target in targets, f"{page.name} names `make {target}`, which the Makefile lacks"


def test_settings_named_in_the_docs_exist() -> None:
    from smartcloudops.settings import Settings

    known = {f"SMARTCLOUDOPS_{name.upper()}" for name in Settings.model_fields}
    known |= {"SMARTCLOUDOPS_IMAGE"}  # the compose file's image name, not a setting
    for page in OWN_PAGES:
        for name in set(re.findall(r"\bSMARTCLOUDOPS_[A-Z_]+[A-Z]", page.read_text(encoding="utf-8"))):
            assert name in known, f"{page.name} names {name}, which smartcloudops/settings.py does not have"


def test_cli_commands_named_in_the_runbook_parse() -> None:
    from smartcloudops.cli import build_parser

    parser = build_parser()
    runbook = (DOCS / "runbook.md").read_text(encoding="utf-8")
    commands = set(re.findall(r"^smartcloudops ([a-z][^#\n]*?)\s*(?:#.*)?$", runbook, re.M))
    assert "audit verify" in commands
    for command in commands:
        parser.parse_args(command.split())  # SystemExit(2) on an unknown command or option


def test_runbook_covers_the_operations_the_issue_names() -> None:
    headings = re.findall(r"^## (.+)$", (DOCS / "runbook.md").read_text(encoding="utf-8"), re.M)
    text = " ".join(headings).lower()
    for topic in ("rules", "approvals", "circuit breaker", "audit verify"):
        assert topic in text, f"runbook has no section on {topic}"
