"""docker-compose.yaml, Dockerfile, .env.example and the image's health-check script.

There is no Docker engine here (NOTES.md), so the compose file is parsed and checked against
the compose specification's JSON schema, the Dockerfile is linted (hadolint, checkov), and the
health-check script is run for real against a loopback HTTP server.
"""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from infra_helpers import REPO, tool

COMPOSE = REPO / "docker-compose.yaml"
STACK = {
    "postgres",
    "redis",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "mlflow",
    "prometheus",
    "node-exporter",
    "grafana",
    "scoring",
    "chatops",
    "simulator",
}
#: service -> container ports it must publish
PORTS = {
    "airflow-apiserver": {8080},
    "mlflow": {5000},
    "prometheus": {9090},
    "node-exporter": {9100},
    "grafana": {3000},
    "scoring": {8080},
    "chatops": {8090},
    "simulator": {9201, 9202, 9203, 9204, 9205},
}
SECRETS = {
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "EVENTS_DB_PASSWORD",
    "GRAFANA_DB_READER_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_ADMIN_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "SMARTCLOUDOPS_CHATOPS_TOKENS",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return doc


def _container_ports(spec: str) -> set[int]:
    target = spec.rsplit(":", 1)[-1].split("/")[0]
    if "-" in target:
        lo, hi = target.split("-")
        return set(range(int(lo), int(hi) + 1))
    return {int(target)}


def test_compose_names_the_whole_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == STACK


def test_every_service_has_an_image_or_build_and_pinned_tags(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image")
        assert image or svc.get("build"), f"{name}: neither image nor build"
        if svc.get("build"):
            assert svc["build"]["dockerfile"] == "Dockerfile"
            assert image == "${SMARTCLOUDOPS_IMAGE:-smartcloudops:local}", name
        else:
            tag = image.rsplit(":", 1)[-1] if ":" in image else ""
            assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: pin the image tag ({image})"


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck", {})
        if check.get("disable"):
            # only a one-shot job may go without: the others wait for it to complete
            assert svc.get("restart") == "no", f"{name}: health check disabled on a long-running service"
            continue
        test = check.get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name}: no health check"
        assert check["interval"] and check["retries"] >= 3, name


def test_ports_are_published_on_the_bind_address_only(compose: dict[str, Any]) -> None:
    for name, wanted in PORTS.items():
        specs = compose["services"][name].get("ports", [])
        published = set().union(*(_container_ports(s) for s in specs)) if specs else set()
        assert published == wanted, f"{name}: publishes {published}, expected {wanted}"
        for spec in specs:
            assert spec.startswith("${BIND_ADDRESS:-127.0.0.1}:"), (
                f"{name}: {spec} is not bound to BIND_ADDRESS"
            )
    assert "ports" not in compose["services"]["redis"]  # internal only
    assert compose["services"]["postgres"]["ports"][0].startswith("${POSTGRES_BIND_ADDRESS:-127.0.0.1}:")


def test_dependencies_exist_and_wait_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            expected = "service_completed_successfully" if dep == "airflow-init" else "service_healthy"
            assert cond["condition"] == expected, f"{name} -> {dep}"
    for airflow in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert {"postgres", "airflow-init"} <= set(services[airflow]["depends_on"])
    assert "postgres" in services["mlflow"]["depends_on"]
    assert "mlflow" in services["scoring"]["depends_on"]
    assert {"postgres", "redis", "mlflow"} <= set(services["chatops"]["depends_on"])
    assert {"prometheus", "postgres"} <= set(services["grafana"]["depends_on"])


def test_mlflow_runs_on_postgresql_with_an_artifact_volume(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
    assert "mlflow-artifacts:/mlflow/artifacts" in mlflow["volumes"]
    assert "--serve-artifacts" in mlflow["command"]


def test_airflow_components_share_one_configuration(compose: dict[str, Any]) -> None:
    services = compose["services"]
    commands = {name: services[name]["command"][:2] for name in services if name.startswith("airflow-")}
    assert commands["airflow-apiserver"] == ["airflow", "api-server"]
    assert commands["airflow-scheduler"] == ["airflow", "scheduler"]
    assert commands["airflow-dag-processor"] == ["airflow", "dag-processor"]
    assert commands["airflow-triggerer"] == ["airflow", "triggerer"]
    envs = [services[n]["environment"] for n in services if n.startswith("airflow-")]
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    ):
        assert len({e[key] for e in envs}) == 1, f"{key} differs between Airflow components"
    assert envs[0]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")


def test_secrets_come_only_from_the_env_file() -> None:
    text = "\n".join(
        line for line in COMPOSE.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")
    )
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.M))
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))  # $${...} is the container's
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text))
    assert required == SECRETS
    for name in SECRETS:
        assert re.search(rf"^{name}=change-me$", example, re.M), f".env.example must not hold a real {name}"
    # no literal credential anywhere: every secret-looking setting is interpolated from .env
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    for name, svc in services.items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if re.search(r"PASSWORD$|SECRET$|TOKENS?$|_KEY$", key):
                assert "${" in str(value), f"{name}: {key} is written in docker-compose.yaml"


def test_compose_file_matches_the_compose_specification() -> None:
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_in_compose_scrapes_the_compose_services(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t.split(":")[0]
        for job in config["scrape_configs"]
        for g in job["static_configs"]
        for t in g["targets"]
    }
    assert targets <= set(compose["services"]), (
        f"scrape targets not in the stack: {targets - set(compose['services'])}"
    )


# -- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_slim_non_root_with_a_health_check() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\w+)", text, re.M | re.I)
    assert [s[1] for s in stages] == ["build", "runtime"]
    assert all(image.startswith("python:3.11-slim") for image, _ in stages)
    assert "COPY --from=build /opt/venv /opt/venv" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"smartcloudops-healthcheck\"\]", text, re.M)
    assert "-c constraints.txt" in text  # the app's exact pins


def test_dockerfile_passes_hadolint_and_checkov() -> None:
    lint = subprocess.run(
        [tool("hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    scan = subprocess.run(
        [
            tool("checkov"),
            "-f",
            str(REPO / "Dockerfile"),
            "--framework",
            "dockerfile",
            "--skip-download",
            "--quiet",
            "--compact",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert scan.returncode == 0, scan.stdout


def test_dockerignore_keeps_state_and_secrets_out_of_the_image() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    first_rule = next(x for x in lines if x and not x.startswith("#"))
    assert first_rule == "*"  # an allow-list: ignore everything, then name what goes in
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    assert ".env" not in allowed and ".venv" not in allowed
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+)", dockerfile, re.M))
    copied |= {
        src
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M)
        for src in line.split()[:-1]
        if not src.startswith("--")
    }
    for src in copied:
        assert src.rstrip("/") in allowed or any(src.startswith(a + "/") for a in allowed), (
            f"{src} is ignored"
        )


# -- the health-check script the image uses -----------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 200 if self.path == "/healthz" else 503
        self.send_response(code)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = REPO / "deploy" / "docker" / "healthcheck.py"
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=30, env=env
    )


def test_healthcheck_script_passes_on_2xx_and_fails_otherwise(http_server: str) -> None:
    from helpers import free_port

    ok = _healthcheck(f"{http_server}/healthz")
    assert ok.returncode == 0 and "HTTP 200" in ok.stdout
    bad = _healthcheck(f"{http_server}/readyz")
    assert bad.returncode == 1 and "HTTP 503" in bad.stdout
    down = _healthcheck(f"http://127.0.0.1:{free_port()}/healthz")
    assert down.returncode == 1 and "refused" in down.stdout.lower()
    assert _healthcheck("ftp://example/").returncode == 1
    from_env = _healthcheck(env={"HEALTHCHECK_URL": f"{http_server}/healthz", "PATH": "/usr/bin:/bin"})
    assert from_env.returncode == 0
