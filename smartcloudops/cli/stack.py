"""``make up`` / ``make down``: the long-running stack on one machine, loopback only."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import httpx

from smartcloudops.cli.processes import (
    ProcessManager,
    free_port,
    port_open,
    read_pid_files,
    stop_stack,
    venv_bin,
)
from smartcloudops.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run_dir(settings: Settings) -> Path:
    return settings.home.resolve() / "run"


def _stack_id(settings: Settings) -> str:
    return str(settings.home.resolve())


def prometheus_config(
    sim_targets: list[tuple[str, str]], node_exporter: str | None, extra: dict[str, str]
) -> str:
    """A scrape config equal in shape to deploy/prometheus/prometheus.yml, for local ports."""
    lines = [
        "global:",
        "  scrape_interval: 5s",
        "  evaluation_interval: 15s",
        "scrape_configs:",
        "  - job_name: simulator",
        "    static_configs:",
    ]
    for host, target in sim_targets:
        lines += [f"      - targets: ['{target}']", f"        labels: {{host: '{host}'}}"]
    if node_exporter:
        lines += [
            "  - job_name: node",
            "    static_configs:",
            f"      - targets: ['{node_exporter}']",
            "        labels: {host: 'localhost'}",
        ]
    for job, target in extra.items():
        lines += [f"  - job_name: {job}", "    static_configs:", f"      - targets: ['{target}']"]
    return "\n".join(lines) + "\n"


def stack_up(settings: Settings, airflow: bool = True) -> int:
    run_dir = _run_dir(settings)
    stack_id = _stack_id(settings)
    if read_pid_files(run_dir):
        leftovers = stop_stack(stack_id, set(read_pid_files(run_dir)), timeout=10)
        if leftovers:
            print(f"processes from an earlier `up` would not stop: {leftovers}")
            return 1
        for pid_file in run_dir.glob("*.pid"):
            pid_file.unlink()
    home = settings.home.resolve()
    token_file = run_dir / "chatops.token"
    run_dir.mkdir(parents=True, exist_ok=True)
    if settings.chatops_tokens is None:
        if not token_file.exists():
            token_file.write_text(secrets.token_urlsafe(24))
            token_file.chmod(0o600)
        token = token_file.read_text().strip()
    else:
        token = settings.chatops_token_list()[0]

    env = {
        "SMARTCLOUDOPS_HOME": str(home),
        "SMARTCLOUDOPS_CHATOPS_TOKENS": token
        if settings.chatops_tokens is None
        else settings.chatops_tokens.get_secret_value(),
        "PATH": f"{Path(venv_bin('python')).parent}:{os.environ.get('PATH', '')}",
    }
    pm = ProcessManager(run_dir, stack_id)
    urls: dict[str, str] = {}
    cli = venv_bin("smartcloudops")
    try:
        sim = pm.start("simulator", [cli, "simulate", "--serve", "--port", str(settings.sim_port)], env)
        sim.url = f"http://127.0.0.1:{settings.sim_port}"
        pm.wait_http(sim, "/metrics", timeout=30)
        urls["simulator"] = (
            f"http://127.0.0.1:{settings.sim_port}/metrics (one port per host from {settings.sim_port})"
        )

        mlflow_port = 5000 if not port_open(5000) else free_port()
        artifacts = settings.mlflow_artifact_root
        artifacts.mkdir(parents=True, exist_ok=True)
        mlflow = pm.start(
            "mlflow",
            [
                venv_bin("mlflow"),
                "server",
                "--backend-store-uri",
                settings.resolved_tracking_uri,
                "--default-artifact-root",
                artifacts.as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
            env,
            url=f"http://127.0.0.1:{mlflow_port}",
        )
        scoring = pm.start(
            "scoring",
            [cli, "serve", "--port", str(settings.scoring_port)],
            env,
            url=f"http://127.0.0.1:{settings.scoring_port}",
        )
        chatops = pm.start(
            "chatops",
            [cli, "chatops", "--port", str(settings.chatops_port)],
            env,
            url=f"http://127.0.0.1:{settings.chatops_port}",
        )

        node_bin = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
        prom_bin = shutil.which("prometheus")
        node_target = None
        if node_bin:
            node_port = 9100 if not port_open(9100) else free_port()
            node = pm.start(
                "node_exporter",
                [node_bin, f"--web.listen-address=127.0.0.1:{node_port}", "--no-collector.systemd"],
                env,
                url=f"http://127.0.0.1:{node_port}",
            )
            node_target = f"127.0.0.1:{node_port}"
            urls["node_exporter"] = f"{node.url}/metrics"
        if prom_bin:
            prom_port = 9090 if not port_open(9090) else free_port()
            config = run_dir / "prometheus.yml"
            sim_targets = [
                (h, f"127.0.0.1:{settings.sim_port + i}") for i, h in enumerate(settings.host_list)
            ]
            config.write_text(
                prometheus_config(
                    sim_targets,
                    node_target,
                    {
                        "scoring": f"127.0.0.1:{settings.scoring_port}",
                        "chatops": f"127.0.0.1:{settings.chatops_port}",
                    },
                )
            )
            prom = pm.start(
                "prometheus",
                [
                    prom_bin,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={home / 'prometheus'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                env,
                url=f"http://127.0.0.1:{prom_port}",
            )
            urls["prometheus"] = prom.url or ""
        else:
            urls["prometheus"] = "not installed (apt-get install prometheus prometheus-node-exporter)"

        airflow_login = None
        if airflow:
            airflow_port = 8081 if not port_open(8081) else free_port()
            from smartcloudops.cli.airflow_runner import airflow_env

            airflow_home = home / "airflow"
            airflow_environment = {
                **env,
                **airflow_env(settings, quiet=False, parallelism=4, api_port=airflow_port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__WORKERS": "1",
            }
            af = pm.start(
                "airflow",
                [venv_bin("airflow"), "standalone"],
                airflow_environment,
                url=f"http://127.0.0.1:{airflow_port}",
            )
            pm.wait_http(af, "/api/v2/monitor/health", timeout=240)
            urls["airflow"] = af.url or ""
            password_file = airflow_home / "simple_auth_manager_passwords.json.generated"
            if password_file.exists():
                airflow_login = json.loads(password_file.read_text())

        pm.wait_http(mlflow, "/health", timeout=120)
        urls["mlflow"] = mlflow.url or ""
        pm.wait_http(scoring, "/healthz", timeout=60)
        urls["scoring"] = f"{scoring.url} (POST /v1/score, GET /readyz)"
        pm.wait_http(chatops, "/healthz", timeout=60)
        urls["chatops"] = f"{chatops.url} (POST /query, GET /status, GET /logs)"
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"up failed: {exc}")
        leftovers = pm.stop_all()
        print("stopped what had started" + (f"; still alive: {leftovers}" if leftovers else ""))
        return 1

    print("SmartCloudOps stack is up (loopback only):")
    for name, url in urls.items():
        print(f"  {name:<14} {url}")
    if airflow_login:
        for user, password in airflow_login.items():
            print(f"  airflow login  {user} / {password}")
    print(
        "  chatops token  stored in "
        + (str(token_file) if settings.chatops_tokens is None else "SMARTCLOUDOPS_CHATOPS_TOKENS")
    )
    print(f"  state + logs   {home}  (service logs in {run_dir})")
    try:
        ready = httpx.get(f"{scoring.url}/readyz", timeout=3.0).status_code == 200
    except httpx.HTTPError:
        ready = False
    if not ready:
        print(
            "note: scoring waits for a champion model. Train one with `smartcloudops train` "
            "(or trigger train_validate_deploy in the Airflow UI); it is picked up within "
            f"{settings.model_poll_seconds:g}s."
        )
    print("stop it with: make down")
    return 0


def stack_down(settings: Settings) -> int:
    run_dir = _run_dir(settings)
    pids = set(read_pid_files(run_dir))
    leftovers = stop_stack(_stack_id(settings), pids)
    for pid_file in run_dir.glob("*.pid"):
        pid_file.unlink()
    if leftovers:
        print(f"could not stop: {sorted(leftovers)}")
        return 1
    print(f"stopped {len(pids)} services; nothing left running")
    return 0
