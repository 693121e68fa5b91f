"""Scoring throughput: our service against `mlflow models serve`, same model, same requests.

One 100-tree Isolation Forest FleetModel (``ml.training.make_candidate("isolation_forest")``,
fit on synthetic fleet history) is registered in a temporary SQLite MLflow with the alias
``champion``. It is served twice on loopback free ports:

- ours: ``smartcloudops serve`` (uvicorn, ``--workers`` from ``--workers``), following the
  champion alias as in production;
- the peer: ``mlflow models serve -m models:/<name>@champion --env-manager local``.

Both get the same row stream (each side in its own wire format): single-row requests from 8
concurrent keep-alive connections for a fixed duration, then batches. The load generator is
``wrk`` (C, Debian package ``wrk``) when on PATH; otherwise a threaded Python client
(``httpx``), which is itself a bottleneck at a few thousand requests/s — the JSON says which.

Prints one JSON line: rps_ours, rps_mlflow, rps_ratio_vs_mlflow, p50_ms, p99_ms (ours, single
row, 8 clients), batch_rows_per_s (ours, 10,000-row batches), rss_mb (our server's resident
memory after the load, summed over its process tree; rss_idle_mb right after the model loaded;
rss_load_peak_mb the tree's peak while the short-lived loader process ran), the server's CPU
time per request and per batch (comparable across runs on a busy machine), plus the peer's
figures and the setup. Every process started is stopped by PID.

Usage: ``python bench/scoring.py [--duration 10] [--clients 8] [--workers 1] [--no-mlflow]
[--candidate isolation_forest|robust_baseline|prophet]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL_NAME = "smartcloudops-anomaly-detector"
HOSTS = [f"web-{i}" for i in range(8)]
TRAIN_DAYS = 2
START = pd.Timestamp("2026-01-01T00:00:00Z")
BATCH_ROWS = 10_000
STREAM_ROWS = 4_000  # distinct single-row bodies, cycled


def log(message: str) -> None:
    print(f"[bench-scoring] {message}", file=sys.stderr, flush=True)


# -- model ---------------------------------------------------------------------------------


def fleet_history() -> pd.DataFrame:
    from smartcloudops.domain import CANONICAL_METRICS

    rng = np.random.default_rng(42)
    ts = pd.date_range(START, periods=TRAIN_DAYS * 1440, freq="1min")
    day = 2 * np.pi * (ts.hour * 60 + ts.minute).to_numpy() / 1440
    base = {"cpu": 35.0, "memory": 55.0, "disk": 40.0, "load": 1.2, "network_in": 2e5, "network_out": 1.5e5}
    frames = []
    for i, host in enumerate(HOSTS):
        data: dict[str, Any] = {"timestamp": ts, "host": host}
        for metric in CANONICAL_METRICS:
            season = 1 + 0.2 * np.sin(day + i)
            data[metric] = base[metric] * season * (1 + rng.normal(0, 0.05, len(ts)))
        frames.append(pd.DataFrame(data))
    return pd.concat(frames, ignore_index=True)


def register_model(
    tracking_uri: str, artifacts: Path, candidate: str = "isolation_forest"
) -> tuple[Any, str]:
    """Fit the fleet (default: the 100-tree Isolation Forest) and register it as ``champion``."""
    import mlflow
    from mlflow import MlflowClient

    from ml._pyfunc import FleetPyfunc
    from ml.tracking import ensure_experiment, model_signature
    from ml.training import make_candidate

    model = make_candidate(candidate)
    if candidate == "isolation_forest":
        model.detector.set_params(n_estimators=100)
    started = time.perf_counter()
    model.fit(fleet_history())
    took = time.perf_counter() - started
    log(f"fit {model.family} on {len(HOSTS)} hosts x {TRAIN_DAYS} days in {took:.1f}s")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, "smartcloudops-bench", artifacts)
    with mlflow.start_run(experiment_id=experiment_id, run_name="bench-scoring"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=FleetPyfunc(model),
            signature=model_signature(model.metrics),
            pip_requirements=["scikit-learn", "pandas", "numpy", "cloudpickle", "mlflow"],
            registered_model_name=MODEL_NAME,
        )
    version = str(info.registered_model_version)
    MlflowClient(tracking_uri=tracking_uri).set_registered_model_alias(MODEL_NAME, "champion", version)
    return model, version


# -- request stream ------------------------------------------------------------------------


def stream_rows(n: int, offset_minutes: int = 0) -> pd.DataFrame:
    """Rows continuing the training history: host round-robin, one minute per host step."""
    from smartcloudops.domain import CANONICAL_METRICS

    rng = np.random.default_rng(7 + offset_minutes)
    i = np.arange(n)
    hosts = [HOSTS[k % len(HOSTS)] for k in i]
    ts = START + pd.to_timedelta(TRAIN_DAYS * 1440 + offset_minutes + i // len(HOSTS), unit="min")
    data: dict[str, Any] = {"timestamp": ts, "host": hosts}
    base = {"cpu": 35.0, "memory": 55.0, "disk": 40.0, "load": 1.2, "network_in": 2e5, "network_out": 1.5e5}
    for metric in CANONICAL_METRICS:
        data[metric] = base[metric] * (1 + rng.normal(0, 0.05, n))
    spikes = rng.random(n) < 0.01  # a few anomalies so the alarm path runs too
    data["cpu"] = np.where(spikes, 98.0, data["cpu"])
    return pd.DataFrame(data)


def ours_bodies(frame: pd.DataFrame) -> list[bytes]:
    from smartcloudops.domain import CANONICAL_METRICS

    out = []
    for row in frame.itertuples(index=False):
        metrics = {m: round(float(getattr(row, m)), 4) for m in CANONICAL_METRICS}
        out.append(
            json.dumps(
                {"host": row.host, "timestamp": row.timestamp.isoformat(), "metrics": metrics}
            ).encode()
        )
    return out


def ours_batch(frame: pd.DataFrame) -> bytes:
    from smartcloudops.domain import CANONICAL_METRICS

    instances = [
        {
            "host": row.host,
            "timestamp": row.timestamp.isoformat(),
            "metrics": {m: round(float(getattr(row, m)), 4) for m in CANONICAL_METRICS},
        }
        for row in frame.itertuples(index=False)
    ]
    return json.dumps({"instances": instances}).encode()


def mlflow_body(frame: pd.DataFrame) -> bytes:
    from smartcloudops.domain import CANONICAL_METRICS

    columns = ["timestamp", "host", *CANONICAL_METRICS]
    # MLflow's datetime columns are naive; the project's contract is naive = UTC.
    data = [
        [row.timestamp.tz_convert("UTC").tz_localize(None).isoformat(), row.host,
         *(round(float(getattr(row, m)), 4) for m in CANONICAL_METRICS)]
        for row in frame.itertuples(index=False)
    ]  # fmt: skip
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


# -- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(cmd: list[str], env: dict[str, str], logfile: Path) -> subprocess.Popen[bytes]:
    handle = logfile.open("wb")
    # A new session: the server and any workers it forks form one group we can stop.
    return subprocess.Popen(
        cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
    )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this script created for it, by PID
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, logfile: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{url}: process exited with {proc.returncode}; log:\n{logfile.read_text()[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s; log:\n{logfile.read_text()[-3000:]}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants: what serving cost, whatever
    else the (shared) machine was doing at the same time."""
    import psutil

    try:
        root = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (uvicorn workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.Error:
        return float("nan")


# -- load ----------------------------------------------------------------------------------

_WRK_SCRIPT = r"""
local bodies = {}
local counter = 0
local thread_id = 0
local threads = {}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do bodies[#bodies + 1] = line end
  f:close()
  counter = (tid or 0) * 997
  bad = 0
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, bodies[(counter % #bodies) + 1])
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local non200 = 0
  for _, t in ipairs(threads) do non200 = non200 + (t:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "non200": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, non200,
    e.connect + e.read + e.write + e.timeout))
end
"""


def load_wrk(url: str, bodies: list[bytes], clients: int, duration: float, workdir: Path) -> dict[str, Any]:
    lines = workdir / f"bodies-{abs(hash(url))}.txt"
    lines.write_bytes(b"\n".join(bodies) + b"\n")
    script = workdir / "stream.lua"
    script.write_text(_WRK_SCRIPT)
    threads = min(2, clients)
    cmd = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{duration:.0f}s", "--timeout", "10s",
           "-s", str(script), url, "--", str(lines)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    found = [line for line in out.stdout.splitlines() if line.startswith("WRKJSON ")]
    if out.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
    raw = json.loads(found[-1].removeprefix("WRKJSON "))
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "rps": raw["requests"] / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "failed": raw["non200"] + raw["socket_errors"],
    }


def load_threads(url: str, bodies: list[bytes], clients: int, duration: float) -> dict[str, Any]:
    """Fallback load generator: ``clients`` threads, one keep-alive httpx client each."""
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    failed = [0] * clients
    deadline = time.perf_counter() + duration

    def worker(k: int) -> None:
        with httpx.Client(timeout=10.0, headers={"content-type": "application/json"}) as client:
            i = k * 997
            while time.perf_counter() < deadline:
                body = bodies[i % len(bodies)]
                i += 1
                t0 = time.perf_counter()
                try:
                    ok = client.post(url, content=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies[k].append(time.perf_counter() - t0)
                failed[k] += not ok

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    all_ms = np.concatenate([np.asarray(x) for x in latencies]) * 1000
    return {
        "requests": int(all_ms.size),
        "rps": all_ms.size / elapsed,
        "p50_ms": float(np.percentile(all_ms, 50)),
        "p90_ms": float(np.percentile(all_ms, 90)),
        "p99_ms": float(np.percentile(all_ms, 99)),
        "max_ms": float(all_ms.max()),
        "failed": int(sum(failed)),
    }


def load_batches(url: str, body: bytes, rows: int, duration: float, max_requests: int) -> dict[str, Any]:
    """One keep-alive client posting the same batch back to back."""
    import httpx

    times: list[float] = []
    failed = 0
    with httpx.Client(timeout=120.0, headers={"content-type": "application/json"}) as client:
        client.post(url, content=body)  # warm-up (first-touch allocations)
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline and len(times) < max_requests:
            t0 = time.perf_counter()
            response = client.post(url, content=body)
            times.append(time.perf_counter() - t0)
            failed += response.status_code != 200
    total = sum(times)
    return {
        "requests": len(times),
        "rows_per_s": rows * len(times) / total if total else 0.0,
        "ms_per_batch": 1000 * total / max(len(times), 1),
        "failed": failed,
    }


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of single-row load per side (<= 20)"
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers for our service")
    parser.add_argument("--batch-seconds", type=float, default=5.0)
    parser.add_argument("--no-mlflow", action="store_true", help="skip the peer (quick runs)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument(
        "--candidate",
        default="isolation_forest",
        help="family of the served model (the issue's figures: isolation_forest; the others "
        "show what a robust_baseline or prophet champion costs)",
    )
    args = parser.parse_args()
    duration = min(max(args.duration, 1.0), 20.0)

    workdir = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # mlflow runs `uvicorn` by name
        "SMARTCLOUDOPS_HOME": str(workdir / "home"),
        "SMARTCLOUDOPS_MLFLOW_TRACKING_URI": tracking_uri,
        "SMARTCLOUDOPS_REGISTERED_MODEL": MODEL_NAME,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    generator = "wrk" if shutil.which("wrk") else "python-threads"
    ours_proc = mlflow_proc = None
    result: dict[str, Any] = {}
    try:
        _, version = register_model(tracking_uri, workdir / "artifacts", args.candidate)
        singles = stream_rows(STREAM_ROWS)
        batch_frame = stream_rows(BATCH_ROWS, offset_minutes=STREAM_ROWS)

        port = free_port()
        cli = str(BIN / "smartcloudops")
        ours_log = workdir / "ours.log"
        ours_proc = start(
            [cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)],
            env,
            ours_log,
        )
        # The model is loaded by a short-lived child of the server: sample the whole tree
        # while it loads, so the transient peak is reported beside the steady state.
        peak = [0.0]
        loading = threading.Event()

        def sample() -> None:
            while not loading.is_set():
                peak[0] = max(peak[0], rss_mb(ours_proc.pid))
                loading.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", ours_proc, 120, ours_log)
        finally:
            loading.set()
            sampler.join()
        log(f"ours ready on :{port} (workers={args.workers})")
        time.sleep(1.0)  # let the load-time gc/trim finish before reading memory
        rss_idle = rss_mb(ours_proc.pid)

        peer: dict[str, Any] = {}
        if not args.no_mlflow:
            mport = free_port()
            mlflow_log = workdir / "mlflow.log"
            mlflow_proc = start(
                [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}@champion",
                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(mport)],
                env,
                mlflow_log,
            )  # fmt: skip
            wait_http(f"http://127.0.0.1:{mport}/ping", mlflow_proc, 180, mlflow_log)
            log(f"mlflow models serve ready on :{mport}")

        def single_row(url: str, bodies: list[bytes]) -> dict[str, Any]:
            if generator == "wrk":
                return load_wrk(url, bodies, args.clients, duration, workdir)
            return load_threads(url, bodies, args.clients, duration)

        ours_url = f"http://127.0.0.1:{port}/v1/score"
        # Warm-up: each host's history fills (features need an hour of context), pages fault in.
        load_batches(ours_url, ours_batch(singles.iloc[:800]), 800, 0.1, 1)
        cpu_start = cpu_seconds(ours_proc.pid)
        ours = single_row(ours_url, ours_bodies(singles))
        log(f"ours single-row: {ours}")
        cpu_single = cpu_seconds(ours_proc.pid)
        batch = load_batches(ours_url, ours_batch(batch_frame), BATCH_ROWS, args.batch_seconds, 200)
        log(f"ours batch: {batch}")
        cpu_batch = cpu_seconds(ours_proc.pid) - cpu_single
        rss = rss_mb(ours_proc.pid)

        if mlflow_proc is not None:
            murl = f"http://127.0.0.1:{mport}/invocations"
            mlflow_bodies = [mlflow_body(singles.iloc[i : i + 1]) for i in range(len(singles))]
            load_batches(murl, mlflow_body(singles.iloc[:800]), 800, 0.1, 1)
            peer = single_row(murl, mlflow_bodies)
            log(f"mlflow single-row: {peer}")
            peer_batch = load_batches(murl, mlflow_body(batch_frame), BATCH_ROWS, args.batch_seconds, 20)
            log(f"mlflow batch: {peer_batch}")
            peer["batch_rows_per_s"] = peer_batch["rows_per_s"]
            peer["rss_mb"] = rss_mb(mlflow_proc.pid)

        rps_mlflow = peer.get("rps")
        result = {
            "rps_ours": round(ours["rps"], 1),
            "rps_mlflow": round(rps_mlflow, 1) if rps_mlflow else None,
            "rps_ratio_vs_mlflow": round(ours["rps"] / rps_mlflow, 2) if rps_mlflow else None,
            "p50_ms": round(ours["p50_ms"], 3),
            "p99_ms": round(ours["p99_ms"], 3),
            "batch_rows_per_s": round(batch["rows_per_s"]),
            "rss_mb": round(rss, 1),
            "rss_idle_mb": round(rss_idle, 1),
            "rss_load_peak_mb": round(peak[0], 1),
            "failed_requests": ours["failed"] + batch["failed"],
            "requests_ours": ours["requests"],
            "p90_ms": round(ours["p90_ms"], 3),
            "batch_ms_per_10k": round(batch["ms_per_batch"], 1),
            # Server CPU per request/batch: comparable across runs on a busy shared machine,
            # where wall-clock figures also measure the neighbours.
            "cpu_ms_per_request": round(1000 * (cpu_single - cpu_start) / max(ours["requests"], 1), 3),
            "cpu_ms_per_10k_batch": round(1000 * cpu_batch / max(batch["requests"] + 1, 1), 1),
            "mlflow_p50_ms": round(peer["p50_ms"], 3) if peer else None,
            "mlflow_p99_ms": round(peer["p99_ms"], 3) if peer else None,
            "mlflow_requests": peer.get("requests"),
            "mlflow_failed": peer.get("failed"),
            "mlflow_batch_rows_per_s": round(peer["batch_rows_per_s"]) if peer else None,
            "mlflow_rss_mb": round(peer["rss_mb"], 1) if peer else None,
            "clients": args.clients,
            "duration_s": duration,
            "workers": args.workers,
            "load_generator": generator,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "model": f"{MODEL_NAME} v{version}: {args.candidate}"
            f"{', 100 trees' if args.candidate == 'isolation_forest' else ''}, {len(HOSTS)} hosts",
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
        }
    finally:
        stop(ours_proc)
        stop(mlflow_proc)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
    print(json.dumps(result), flush=True)
    return 0 if result and result["failed_requests"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
