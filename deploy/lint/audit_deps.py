"""pip-audit over the pinned dependencies, honest about what it could not check.

``pip-audit -r constraints.txt`` exits 0 and prints "No known vulnerabilities found" even
when it could audit nothing at all (every package "not found" because the vulnerability
service did not answer). This wrapper reads its JSON report and says which of three things
happened:

* vulnerabilities found and not documented in ``pip-audit-ignore.txt``: exit 1;
* every package audited, nothing found: exit 0;
* some or all packages could not be audited (no network to the vulnerability service):
  a loud ``NOT CHECKED`` and exit 0, or exit 1 when ``PIP_AUDIT_STRICT=1`` (CI on GitHub,
  where the service is reachable, sets it).

Run: ``.venv/bin/python deploy/lint/audit_deps.py [--requirements constraints.txt]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PIP_AUDIT = REPO / ".venv-tools" / "bin" / "pip-audit"
DEFAULT_IGNORE = Path(__file__).resolve().parent / "pip-audit-ignore.txt"
TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    vuln_id: str
    fix_versions: tuple[str, ...]


@dataclass(frozen=True)
class AuditResult:
    audited: int
    skipped: dict[str, str]
    findings: list[Finding]


def read_ignores(path: Path) -> dict[str, str]:
    """``VULN-ID  why it does not apply`` per line; a line without a reason is an error."""
    ignores: dict[str, str] = {}
    if not path.exists():
        return ignores
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        vuln_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise ValueError(f"{path}:{number}: {vuln_id} has no reason; write why it does not apply")
        ignores[vuln_id] = reason.strip()
    return ignores


def parse_report(report: dict[str, Any], ignored: set[str]) -> AuditResult:
    findings: list[Finding] = []
    skipped: dict[str, str] = {}
    audited = 0
    for dep in report.get("dependencies", []):
        name = str(dep.get("name"))
        if "skip_reason" in dep:
            skipped[name] = str(dep["skip_reason"])
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            ids = {str(vuln.get("id")), *(str(a) for a in vuln.get("aliases", []))}
            if ids & ignored:
                continue
            fixes = tuple(str(v) for v in vuln.get("fix_versions", []))
            findings.append(Finding(name, str(dep.get("version")), str(vuln.get("id")), fixes))
    return AuditResult(audited=audited, skipped=skipped, findings=findings)


def run_pip_audit(pip_audit: Path, requirements: Path, ignored: set[str]) -> dict[str, Any]:
    if not pip_audit.exists():
        raise FileNotFoundError(f"{pip_audit} is missing; run `make tools` (the .venv-tools venv)")
    argv = [
        str(pip_audit), "-r", str(requirements),
        # constraints.txt pins every package: audit exactly those, resolve nothing.
        "--no-deps", "--disable-pip", "--progress-spinner", "off", "-f", "json",
    ]  # fmt: skip
    for vuln_id in sorted(ignored):
        argv += ["--ignore-vuln", vuln_id]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        detail = proc.stderr.strip()
        raise RuntimeError(f"pip-audit gave no JSON report (exit {proc.returncode}): {detail}") from exc
    return report


def verdict(result: AuditResult, strict: bool) -> tuple[int, list[str]]:
    total = result.audited + len(result.skipped)
    lines = []
    for f in result.findings:
        fix = f"fixed in {', '.join(f.fix_versions)}" if f.fix_versions else "no fix released"
        lines.append(f"VULNERABLE {f.package}=={f.version}: {f.vuln_id} ({fix})")
    if result.skipped:
        sample = next(iter(result.skipped.values()))
        lines.append(
            f"pip-audit: NOT CHECKED for {len(result.skipped)} of {total} packages: the vulnerability "
            f"service did not answer for them (first reason: {sample!r}). Without network access to "
            "PyPI's JSON API this is not a pass; CI on GitHub runs it with PIP_AUDIT_STRICT=1."
        )
    if result.findings:
        lines.append(
            f"pip-audit: {len(result.findings)} known vulnerabilities"
            " (document exceptions that do not apply in deploy/lint/pip-audit-ignore.txt)"
        )
        return 1, lines
    if result.skipped:
        return (1 if strict else 0), lines
    lines.append(f"pip-audit: {result.audited} packages audited, no known vulnerability")
    return 0, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pip-audit over pinned requirements, honest about gaps")
    parser.add_argument("--requirements", type=Path, default=REPO / "constraints.txt")
    parser.add_argument("--pip-audit", type=Path, default=DEFAULT_PIP_AUDIT)
    parser.add_argument("--ignore-file", type=Path, default=DEFAULT_IGNORE)
    args = parser.parse_args(argv)
    strict = os.environ.get("PIP_AUDIT_STRICT", "") == "1"
    try:
        ignores = read_ignores(args.ignore_file)
        report = run_pip_audit(args.pip_audit, args.requirements, set(ignores))
    except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"pip-audit: {exc}", file=sys.stderr)
        return 2
    code, lines = verdict(parse_report(report, set(ignores)), strict)
    for line in lines:
        print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
