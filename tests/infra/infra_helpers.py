"""Shared pieces of the infrastructure tests (tests/infra): repository paths, the scanner venv."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".venv-tools" / "bin"


def tool(name: str) -> str:
    """A scanner from the tools venv (constraints-tools.txt); fail, never skip, when missing."""
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build the scanner venv with `make tools`")
    return str(path)
