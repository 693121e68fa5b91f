"""GitHub Actions workflows (valid YAML, the schema, the jobs the issue names) and the lint
helpers of deploy/lint (pip-audit's honest verdict, user-data rendering)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from infra_helpers import REPO, tool

WORKFLOWS = REPO / ".github" / "workflows"
sys.path.insert(0, str(REPO / "deploy" / "lint"))


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def _uses(job: dict[str, Any]) -> list[str]:
    return [step["uses"] for step in job["steps"] if "uses" in step]


def test_workflows_match_the_github_workflow_schema() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert {Path(f).name for f in files} >= {"infra.yml", "ci-app.yml"}
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_pass_checkov() -> None:
    proc = subprocess.run(
        [
            tool("checkov"),
            "-d",
            str(WORKFLOWS),
            "--framework",
            "github_actions",
            "--skip-download",
            "--quiet",
            "--compact",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("name", ["infra.yml", "ci-app.yml"])
def test_workflows_are_read_only_by_default_and_time_limited(name: str) -> None:
    doc = _load(name)
    assert doc["permissions"] == {"contents": "read"}
    for job_name, job in doc["jobs"].items():
        assert job.get("timeout-minutes"), f"{name}/{job_name}: no timeout"
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout"):
                assert step["with"]["persist-credentials"] is False
        for ref in _uses(job):
            assert "@" in ref and not ref.endswith(("@main", "@master")), f"{ref}: pin the action's version"


def test_infra_workflow_runs_terraform_fmt_validate_and_checkov() -> None:
    doc = _load("infra.yml")
    assert {"push", "pull_request"} <= set(doc["on"])
    jobs = doc["jobs"]
    terraform = _runs(jobs["terraform"])
    assert "terraform fmt -check" in terraform
    assert "terraform init -backend=false" in terraform
    assert "terraform validate" in terraform
    assert any(u.startswith("hashicorp/setup-terraform@") for u in _uses(jobs["terraform"]))
    checkov = _runs(jobs["checkov"])
    assert "-c constraints-tools.txt checkov" in checkov
    assert "checkov -d terraform" in checkov
    deploy = _runs(jobs["deploy-files"])
    assert "promtool test rules" in deploy and "docker compose config" in deploy and "hadolint" in deploy


def test_app_workflow_lints_tests_and_pushes_the_image_from_main_only() -> None:
    doc = _load("ci-app.yml")
    jobs = doc["jobs"]
    assert "make lint" in _runs(jobs["lint"])
    lint_env = next(s for s in jobs["lint"]["steps"] if s.get("run") == "make lint")["env"]
    assert lint_env["PIP_AUDIT_STRICT"] == "1"
    assert "make test" in _runs(jobs["test"])
    assert set(jobs["test"]["services"]) == {"postgres", "redis"}
    build = jobs["build"]
    assert build["needs"] == ["lint", "test"]
    assert build["permissions"] == {"contents": "read", "packages": "write"}
    main_only = "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    push = [
        s
        for s in build["steps"]
        if s.get("uses", "").startswith("docker/build-push-action") and s["with"].get("push")
    ]
    assert len(push) == 1 and push[0]["if"] == main_only
    login = next(s for s in build["steps"] if s.get("uses", "").startswith("docker/login-action"))
    assert login["if"] == main_only
    assert any(u.startswith("aquasecurity/trivy-action@") for u in _uses(build))
    scan = next(s for s in build["steps"] if s.get("uses", "").startswith("aquasecurity/trivy-action"))
    assert scan["with"]["exit-code"] == "1"


# -- deploy/lint helpers ------------------------------------------------------------------------


def test_pip_audit_verdict_never_passes_what_it_could_not_check() -> None:
    from audit_deps import parse_report, verdict

    offline = {
        "dependencies": [
            {"name": "a", "skip_reason": "Dependency not found on PyPI"},
            {"name": "b", "skip_reason": "Dependency not found on PyPI"},
        ]
    }
    result = parse_report(offline, set())
    code, lines = verdict(result, strict=False)
    assert code == 0 and "NOT CHECKED for 2 of 2" in lines[-1]
    assert verdict(result, strict=True)[0] == 1
    clean = {"dependencies": [{"name": "a", "version": "1", "vulns": []}]}
    assert verdict(parse_report(clean, set()), strict=True) == (
        0,
        ["pip-audit: 1 packages audited, no known vulnerability"],
    )
    vulnerable = {
        "dependencies": [
            {
                "name": "a",
                "version": "1",
                "vulns": [{"id": "PYSEC-1", "aliases": ["CVE-1"], "fix_versions": ["2"]}],
            }
        ]
    }
    code, lines = verdict(parse_report(vulnerable, set()), strict=False)
    assert code == 1 and "VULNERABLE a==1: PYSEC-1 (fixed in 2)" in lines
    assert verdict(parse_report(vulnerable, {"CVE-1"}), strict=True)[0] == 0  # documented exception


def test_pip_audit_ignore_file_needs_a_reason(tmp_path: Path) -> None:
    from audit_deps import read_ignores

    good = tmp_path / "good.txt"
    good.write_text("# comment\nPYSEC-1 only affects the CLI we never run\n")
    assert read_ignores(good) == {"PYSEC-1": "only affects the CLI we never run"}
    bad = tmp_path / "bad.txt"
    bad.write_text("PYSEC-2\n")
    with pytest.raises(ValueError, match="no reason"):
        read_ignores(bad)
    assert read_ignores(REPO / "deploy" / "lint" / "pip-audit-ignore.txt") == {}


def test_user_data_renderer_handles_terraform_escapes() -> None:
    from check_shell import render_template, template_variables

    text = 'A="${region}"\necho "$${HOME}" "$PATH"\n'
    assert template_variables(text) == {"region"}
    assert render_template(text, "x") == 'A="x"\necho "${HOME}" "$PATH"\n'
    with pytest.raises(ValueError, match="directives"):
        render_template("%{ for x in y }${x}%{ endfor }")
    with pytest.raises(ValueError, match="unsupported"):
        render_template('A="${upper(region)}"')
