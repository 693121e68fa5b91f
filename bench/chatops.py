"""ChatOps latency under load: deterministic questions from 16 concurrent clients.

Starts the real server -- ``smartcloudops chatops`` (gunicorn) as a subprocess on a free
loopback port, embedded default (simulator metrics, SQLite event store, JSON logs) in a
fresh temporary ``SMARTCLOUDOPS_HOME`` seeded with anomalies, actions and log lines -- waits
for ``/healthz``, warms up, then sends a fixed rotation of questions (the three seed
questions and other read-only intents, no LLM) from ``--clients`` threads over keep-alive
connections (one process per client) until ``--requests`` are answered or ``--seconds``
pass. Every answer is
checked (HTTP 200 and the expected intent); a wrong one counts as an error.

Peer in the same run: ``GET /healthz`` through the same server and clients -- the floor of
HTTP + gunicorn + Flask with no work -- so ``p95_vs_healthz`` says what answering costs.

Prints ONE JSON line: ``{"p50_ms", "p95_ms", "rps", ...}``. Target: p95 <= 50 ms.
Stops the server it started, by PID (its own process group), whatever happens.

    python bench/chatops.py [--clients 16] [--requests 3000] [--seconds 30] [--workers 2]

Named ``chatops.py`` like the package (``make bench-chatops`` wants it so): run as a script,
``bench/`` comes first on ``sys.path``, so this file must never ``import chatops`` -- it talks
to the server over HTTP only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789abcdef"
HOSTS = ["web-1", "web-2", "app-1", "db-1", "db-2"]
TARGET_P95_MS = 50.0

#: (question, the intent a correct answer has)
QUESTIONS: list[tuple[str, str]] = [
    ("What's current CPU?", "metric.current"),
    ("Summarize last 3 anomalies", "anomaly.summary"),
    ("Show logs from 10 minutes ago", "logs.search"),
    ("memory on web-1 over the last hour", "metric.history"),
    ("errors containing timeout in the past 2h", "logs.search"),
    ("remediation history", "remediation.history"),
    ("disk on db-1", "metric.current"),
    ("anomalies on web-1 in the last day", "anomaly.summary"),
    ("help", "help"),
    ("pending approvals", "remediation.history"),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(home: Path) -> None:
    """A small, realistic state: anomalies and actions in the event store, JSON log lines."""
    sys.path.insert(0, str(ROOT))
    from smartcloudops.domain import ActionRecord, ActionStatus, Anomaly, Severity, utcnow
    from smartcloudops.events import EventStore

    now = utcnow()
    store = EventStore(f"sqlite:///{home / 'events.db'}")
    try:
        store.record_anomalies([
            Anomaly(HOSTS[i % len(HOSTS)], now - timedelta(minutes=3 * i + 1), 0.6 + (i % 4) / 10,
                    Severity(1 + i % 4), "1", {"cpu": 0.7, "memory": 0.2}, {"cpu": 90.0 + i % 9})
            for i in range(200)
        ])
        for i in range(30):
            store.record_action(ActionRecord(
                "restart_service", HOSTS[i % len(HOSTS)],
                ActionStatus.PENDING if i % 10 == 0 else ActionStatus.SUCCEEDED, "cpu_high", True,
                timestamp=now - timedelta(minutes=7 * i)))
    finally:
        store.close()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    levels = ["INFO", "INFO", "WARNING", "ERROR"]
    with open(logs / f"smartcloudops-{now:%Y-%m-%d}.jsonl", "a", encoding="utf-8") as fh:
        for i in range(2000):
            at = now - timedelta(seconds=20 * (2000 - i))
            if at.date() != now.date():
                continue
            fh.write(json.dumps({
                "timestamp": at.isoformat(), "level": levels[i % 4], "component": "bench",
                "logger": "bench", "message": f"event {i} on {HOSTS[i % 5]}"
                + (": timeout after 30s" if i % 8 == 3 else ""),
            }) + "\n")


def start_server(home: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    cli = shutil.which("smartcloudops", path=str(Path(sys.executable).parent)) or "smartcloudops"
    env = {
        **os.environ,
        "SMARTCLOUDOPS_HOME": str(home),
        "SMARTCLOUDOPS_CHATOPS_TOKENS": TOKEN,
        "SMARTCLOUDOPS_CHATOPS_RATE_LIMIT_PER_MINUTE": "0",  # measuring answers, not the limiter
        "SMARTCLOUDOPS_SIM_HOSTS": ",".join(HOSTS),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    for name in ("SMARTCLOUDOPS_LLM_MODEL", "SMARTCLOUDOPS_PROMETHEUS_URL", "PROMETHEUS_URL",
                 "SMARTCLOUDOPS_EVENT_STORE_URL", "SMARTCLOUDOPS_MLFLOW_TRACKING_URI"):
        env.pop(name, None)  # the embedded default, whatever the caller's shell has
    return subprocess.Popen(
        [cli, "chatops", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=open(home / "server.err", "wb"),
        start_new_session=True,  # its own process group: we stop gunicorn and its workers together
    )


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group we created for it (pgid == its PID)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


def group_cpu_seconds(pgid: int) -> float | None:
    """CPU time (user + system) used so far by every process in a process group (Linux /proc);
    per request it is a figure the machine's other load does not change much."""
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:  # pgrp; fields[0] is the state (after "pid (comm)")
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, proc: subprocess.Popen[bytes], home: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (home / "server.err").read_text(errors="replace")[-2000:]
            raise SystemExit(f"chatops server exited with {proc.returncode}:\n{err}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"chatops server did not answer /healthz within {timeout:.0f}s")


class Client:
    """One keep-alive HTTP/1.1 connection over a plain socket; reconnects when the server
    closes it. Deliberately minimal (no http.client header parsing): the load generator
    shares the 2 cores with the server, and every microsecond it spends is taken from it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        return sock

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        payload = body or b""
        request = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                   f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(payload)}\r\n\r\n").encode("ascii") + payload
        for attempt in range(2):
            if self.sock is None:
                self.sock = self._connect()
            try:
                self.sock.sendall(request)
                return self._response()
            except (ConnectionError, EOFError):
                self._close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _recv(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def _response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = int(fields.get("content-length", "0"))  # gunicorn + Flask always send it here
        while len(self.buf) < length:
            self._recv()
        data, self.buf = self.buf[:length], self.buf[length:]
        if fields.get("connection", "").lower() == "close":
            self._close()
        return status, data


RequestMaker = Callable[[int], tuple[str, str, bytes | None, str | None]]


def _client_loop(port: int, k: int, clients: int, requests: int, deadline: float,
                 make_request: RequestMaker) -> dict[str, Any]:
    """One client: requests k, k + clients, ... over one keep-alive connection, until done
    or ``deadline`` (wall clock). Runs in its own process."""
    client = Client(port)
    done: list[tuple[int, float]] = []
    errors: list[str] = []
    first = last = time.time()
    for i in range(k, requests, clients):
        if time.time() >= deadline:
            break
        method, path, body, intent = make_request(i)
        t0 = time.perf_counter()
        try:
            status, raw = client.send(method, path, body)
        except OSError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        done.append((i, (time.perf_counter() - t0) * 1000))
        last = time.time()
        if status != 200:
            errors.append(f"HTTP {status}: {raw[:200]!r}")
        elif intent is not None and f'"intent":"{intent}"'.encode() not in raw:
            # A substring test of Flask's compact JSON, cheaper than parsing every answer;
            # parse only to report what came instead.
            errors.append(f"wrong intent for request {i}: {json.loads(raw).get('intent')}")
    return {"done": done, "errors": errors, "first": first, "last": last}


def run_load(port: int, clients: int, requests: int, seconds: float,
             make_request: RequestMaker) -> dict[str, Any]:
    """Send ``requests`` (or until ``seconds``) from ``clients`` concurrent clients.

    One *process* per client, not a thread: 16 client threads in one interpreter queue for
    its GIL, and that wait would be measured as server latency.
    """
    deadline = time.time() + seconds
    ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=clients, mp_context=ctx) as pool:
        parts = list(pool.map(_client_loop, [port] * clients, range(clients), [clients] * clients,
                              [requests] * clients, [deadline] * clients, [make_request] * clients))
    by_request = [d for p in parts for d in p["done"]]
    wall = max(p["last"] for p in parts) - min(p["first"] for p in parts)
    return {"latencies": sorted(ms for _, ms in by_request),
            "errors": [e for p in parts for e in p["errors"]], "wall": wall, "by_request": by_request}


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def query_request(i: int) -> tuple[str, str, bytes | None, str | None]:
    text, intent = QUESTIONS[i % len(QUESTIONS)]
    return "POST", "/query", json.dumps({"query": text}).encode(), intent


def healthz_request(i: int) -> tuple[str, str, bytes | None, str | None]:
    return "GET", "/healthz", None, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=30.0, help="upper bound of the measured phase")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--per-question", action="store_true",
                        help="also print p50/p95/p99 of each question (stderr)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-chatops-"))
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        seed(home)
        proc = start_server(home, port, args.workers)
        wait_ready(port, proc, home)
        warm = run_load(port, min(args.clients, 4), args.warmup, 60, query_request)
        if warm["errors"]:
            raise SystemExit(f"warm-up failed: {warm['errors'][:3]}")
        cpu_before = group_cpu_seconds(proc.pid)
        main_run = run_load(port, args.clients, args.requests, args.seconds, query_request)
        cpu_after = group_cpu_seconds(proc.pid)
        peer = run_load(port, args.clients, min(args.requests, 2000), 10, healthz_request)
        cpu_peer = group_cpu_seconds(proc.pid)
    finally:
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(home, ignore_errors=True)

    lat = main_run["latencies"]
    p95 = pct(lat, 0.95)
    healthz_p95 = pct(peer["latencies"], 0.95)
    result = {
        "p50_ms": round(pct(lat, 0.50), 2),
        "p95_ms": round(p95, 2),
        "rps": round(len(lat) / main_run["wall"], 1) if main_run["wall"] else 0.0,
        "p99_ms": round(pct(lat, 0.99), 2),
        "requests": len(lat),
        "errors": len(main_run["errors"]),
        "clients": args.clients,
        "workers": args.workers,
        "target_p95_ms": TARGET_P95_MS,
        "meets_target": bool(p95 <= TARGET_P95_MS and not main_run["errors"]),
        # Load-independent: server CPU (all gunicorn processes) per answered question.
        "server_cpu_ms_per_request": round((cpu_after - cpu_before) * 1000 / len(lat), 2)
        if cpu_before is not None and cpu_after is not None and lat else None,
        "healthz_server_cpu_ms_per_request": round((cpu_peer - cpu_after) * 1000 / len(peer["latencies"]), 2)
        if cpu_peer is not None and cpu_after is not None and peer["latencies"] else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "healthz_p50_ms": round(pct(peer["latencies"], 0.50), 2),
        "healthz_p95_ms": round(healthz_p95, 2),
        "p95_vs_healthz": round(p95 / healthz_p95, 2) if healthz_p95 else None,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
    }
    if main_run["errors"]:
        result["first_errors"] = main_run["errors"][:3]
    if args.per_question:
        for k, (text, _) in enumerate(QUESTIONS):
            own = sorted(ms for i, ms in main_run["by_request"] if i % len(QUESTIONS) == k)
            print(f"{pct(own, 0.5):8.1f} {pct(own, 0.95):8.1f} {pct(own, 0.99):8.1f}  {text}",
                  file=sys.stderr)
    print(json.dumps(result))
    return 0 if not main_run["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
